"""The lifecycle rules (API.md section 6) with time moved by hand."""

from datetime import datetime, timedelta, timezone

import pytest

from contextsvc.domain import lifecycle
from contextsvc.domain.lifecycle import Policy

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def at(**delta):
    return T0 + timedelta(**delta)


def service(**extra):
    doc = {"service_id": 1, "service_type": "wireless", "started": {"timestamp":
           "2026-03-01T12:00:00.000Z"}, "data": {}, "states": [], "tasks": [], **extra}
    lifecycle.touch(doc, T0)
    return doc


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("15m", 900), ("12h", 43200),
                                           ("30d", 2592000), ("2w", 1209600), ("", None),
                                           (" 1m ", 60)])
def test_durations(text, seconds):
    assert lifecycle.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0s", "-1m", "1", "m", "1.5h", "1y", "1 m", "１m", "1M"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="duration"):
        lifecycle.parse_duration(text)


def test_no_policy_no_lifecycle():
    doc = service()
    assert lifecycle.settle(doc, lifecycle.OFF, at(days=3650))
    assert "completed" not in doc and lifecycle.shown(doc, lifecycle.OFF) == {}


def test_expiration_counts_from_the_last_update_and_each_update_moves_it():
    policy = Policy(expiration=3600)
    doc = service()
    assert lifecycle.shown(doc, policy) == {"expiration_time": "2026-03-01T13:00:00.000Z"}
    assert lifecycle.settle(doc, policy, at(minutes=59, seconds=59))
    lifecycle.touch(doc, at(minutes=30))
    assert lifecycle.settle(doc, policy, at(minutes=89))
    assert not lifecycle.settle(doc, policy, at(minutes=90))  # exactly at the moment


def test_a_service_type_has_its_own_expiration():
    policy = Policy(expiration=3600, by_type={"wireless": 60, "100": 7200})
    assert lifecycle.expiration(service(), policy) == at(seconds=60)
    assert lifecycle.expiration(service(service_type=100), policy) == at(hours=2)
    assert lifecycle.expiration(service(service_type="other"), policy) == at(hours=1)
    assert lifecycle.expiration(service(), Policy(by_type={"x": 5})) is None


def test_a_clients_expiration_wins_and_updates_do_not_move_it():
    policy = Policy(expiration=60)
    doc = service()
    lifecycle.set_expiration(doc, {"ttl": 86400, "expiration_time": "2026-03-01T12:00:05.000Z"},
                             T0)
    lifecycle.touch(doc, at(hours=5))
    assert lifecycle.expiration(doc, policy) == at(days=1)
    lifecycle.set_expiration(doc, {"expiration_time": "2026-03-01T12:00:05.000Z"}, at(hours=6))
    assert not lifecycle.settle(doc, policy, at(seconds=5))  # in the past: at once


def test_auto_complete_at_the_deadline_completes_everything_still_active():
    policy = Policy(auto_complete_after=600)
    doc = service()
    doc["states"] = [{"state_id": 1, "started": {"timestamp": "2026-03-01T12:01:00.000Z"}},
                     {"state_id": 2, "started": {"timestamp": "2026-03-01T12:02:00.000Z"},
                      "completed": {"timestamp": "2026-03-01T12:03:00.000Z"}, "duration": 60000}]
    doc["tasks"] = [{"task_id": 1, "started": {"timestamp": "2026-03-01T12:04:00.000Z"}}]
    assert lifecycle.shown(doc, policy) == {"auto_complete_at": "2026-03-01T12:10:00.000Z"}
    assert lifecycle.settle(doc, policy, at(minutes=9, seconds=59)) and "completed" not in doc
    assert lifecycle.settle(doc, policy, at(days=2))
    done = {"timestamp": "2026-03-01T12:10:00.000Z", "auto_completed": True}
    assert doc["completed"] == done and doc["duration"] == 600_000
    assert doc["states"][0]["completed"] == done and doc["states"][0]["duration"] == 540_000
    assert doc["states"][1]["completed"]["timestamp"] == "2026-03-01T12:03:00.000Z"
    assert doc["tasks"][0]["completed"] == done
    assert "disposition" not in doc
    assert lifecycle.shown(doc, policy) == {}  # no deadline once completed


def test_a_services_own_idle_period_wins_and_zero_turns_it_off():
    policy = Policy(auto_complete_after=600)
    doc = service()
    lifecycle.set_auto_complete(doc, {"auto_complete_after": 0})
    assert lifecycle.settle(doc, policy, at(days=30)) and "completed" not in doc
    doc = service()
    lifecycle.set_auto_complete(doc, {"auto_complete_after": 5})
    assert lifecycle.deadline(doc, policy) == at(seconds=5)
    assert lifecycle.deadline(service(), Policy()) is None


def test_expiration_before_the_deadline_wins():
    policy = Policy(expiration=60, auto_complete_after=600)
    doc = service()
    assert lifecycle.due(doc, policy) == at(seconds=60)
    assert not lifecycle.settle(doc, policy, at(minutes=20))
