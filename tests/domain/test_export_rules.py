"""The export form read back (contextsvc/domain/export.py): the import's quick field
checks agree with the marshmallow declarations they are derived from, and the
lifecycle moments a service shows survive the way back under any configuration."""

import functools
import json
import os
from datetime import datetime, timedelta, timezone

import pytest
from marshmallow import ValidationError

from contextsvc.domain import export, lifecycle
from contextsvc.domain.events import EVENT_FIELDS, SCHEMAS
from contextsvc.domain.model import COMMON, KINDS
from contextsvc.errors import Invalid

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
STAMP = "2026-01-01T00:00:00.000Z"

SAMPLES = [0, 1, -1, 7, 2**31 - 1, 2**31, 2**53 - 1, 2**53, 2**63 - 1, 2**63, -(2**63),
           -(2**63) - 1, True, False, 1.0, 1.5, "", "x", "1", "a" * 32, "a" * 33, "a" * 50,
           "a" * 51, "a" * 64, "a" * 65, "a" * 256, "a" * 257, [], {}, [1], {"a": 1},
           "2009-05-07T12:05:20.157Z", "2009-05-07T12:05:20", "2009-05-07T12:05:20.1+02:00",
           "2009-13-07T12:05:20.157Z", "2009-02-29T00:00:00.000Z", "0000-01-01T00:00:00.000Z",
           "2009-05-07 12:05:20", "2009-05-07T12:05:20.157Zjunk"]


def declared_fields():
    for kind in KINDS.values():
        for name, fld in {**kind.own, **COMMON}.items():
            if name not in ("started", "completed"):
                yield f"{kind.name}.{name}", fld
    for name in EVENT_FIELDS:
        yield f"event.{name}", SCHEMAS["SharedEvent"].fields[name]


@pytest.mark.parametrize("name, fld", list(declared_fields()), ids=lambda v: str(v)[:30])
def test_quick_checks_accept_and_normalize_what_marshmallow_does(name, fld):
    check = export._checker(fld)
    for value in SAMPLES:
        try:
            expected = fld.deserialize(value)
        except ValidationError:
            expected = ValidationError
        try:
            got = check(value)
        except ValueError:
            got = ValidationError
        assert got == expected and type(got) is type(expected), (name, value)


def service_line(**extra):
    rep = {
        "service_id": 42, "customer_id": "ABC", "contact_key": "408", "service_type": "x",
        "est_duration": 60, "started": {"timestamp": "2026-01-01T10:00:00+02:00",
                                        "media_type": "voice", "session_id": None},
        "completed": {"timestamp": "2026-01-01T09:00:00.5Z", "auto_completed": True},
        "disposition": 3, "duration": 1000, "customer_id_copy": None,
        "data": [1, {"deep": [None, 1.5, "\ud800"]}], "states": "not the states",
        "active_states": [{"state_id": 2, "previous_state_id": 1, "started": {
            "timestamp": "2026-01-01T08:00:00Z"}, "timestamp": "attached data here"}],
        "completed_states": [{"state_id": 1, "started": {"timestamp": "2026-01-01T08:00:00Z"},
                              "completed": {"timestamp": "2026-01-01T08:30:00Z"},
                              "duration": 1800000, "customer_id": "data on a state"}],
        "active_tasks": [{"task_id": 3, "state_id": 2, "task_type": 1, "started": {
            "timestamp": "2026-01-01T08:00:00Z"}}],
        "completed_tasks": [{"task_id": 1, "started": {"timestamp": "2026-01-01T08:00:00Z"},
                             "completed": {"timestamp": "2026-01-01T08:00:00Z"}}],
        **extra}
    return json.dumps(rep).encode()


def test_a_line_reads_back_as_the_stored_document():
    first = export.document(export.parse(service_line()), lifecycle.OFF, NOW)
    assert list(first) == ["service_id", "customer_id", "contact_key", "service_type",
                           "est_duration", "started", "completed", "disposition", "duration",
                           "data", "states", "tasks", "updated"]
    assert first["started"]["timestamp"] == "2026-01-01T08:00:00.000Z"  # normalized
    assert [s["state_id"] for s in first["states"]] == [1, 2]
    assert first["data"]["states"] == "not the states"
    assert first["states"][0]["data"] == {"customer_id": "data on a state"}


@pytest.mark.parametrize("change, message", [
    ({"service_id": 2**53}, "service_id: not an integer from 1 to 9007199254740991"),
    ({"service_id": "42"}, "service_id: not an integer"),
    ({"service_id": None}, "service_id: required"),
    ({"customer_id": None, "contact_key": None}, "customer_id: customer_id or contact_key"),
    ({"customer_id": "x" * 257}, "customer_id: not a string of 1 to 256"),
    ({"started": None}, "started: required"),
    ({"started": {"timestamp": "yesterday"}}, "started.timestamp: 'yesterday'"),
    ({"started": {"interaction_id": "x"}}, "started.timestamp: required"),
    ({"started": {"timestamp": "2026-01-01T00:00:00Z", "x": 1}}, "started.x: not a field"),
    ({"started": {"timestamp": "2026-01-01T00:00:00Z", "auto_completed": True}},
     "started.auto_completed: not a field"),
    ({"ttl": 60}, "ttl: not a field of a service, and a reserved name"),
    ({"state_id": 1}, "state_id: not a field of a service"),
    ({"auto_complete_at": "2026-01-01T00:00:00Z"}, "auto_complete_at: only an active service"),
    ({"duration": -1}, "duration: not an integer from 0"),
    ({"active_states": {}}, "active_states: not an array"),
    ({"active_states": [1]}, "active_states[0]: not an object (a state)"),
    ({"active_states": [{"started": {"timestamp": "2026-01-01T00:00:00Z"}}]},
     "active_states[0].state_id: required"),
    ({"active_states": [{"state_id": 1, "started": {"timestamp": "2026-01-01T00:00:00Z"}}]},
     "completed_states[0].state_id: 1 is also the id of active_states[0]"),
    ({"active_states": [{"state_id": 2**31, "started": {"timestamp": "2026-01-01T00:00:00Z"}}]},
     "active_states[0].state_id: not an integer from 1 to 2147483647"),
    ({"completed_states": [{"state_id": 1, "previous_state_id": 9,
                            "started": {"timestamp": "2026-01-01T00:00:00Z"},
                            "completed": {"timestamp": "2026-01-01T00:00:00Z"}}]},
     "completed_states[0].previous_state_id: 9 is not a state"),
    ({"completed_states": [{"state_id": 1, "started": {"timestamp": "2026-01-01T00:00:00Z"}}]},
     "completed_states[0].completed: required in a completed one"),
    ({"active_tasks": [{"task_id": 3, "state_id": 7, "started": {
        "timestamp": "2026-01-01T00:00:00Z"}}]}, "active_tasks[0].state_id: 7 is not a state"),
    ({"active_tasks": [{"task_id": 3, "started": {"timestamp": "2026-01-01T00:00:00Z"},
                        "active_tasks": []}]}, "active_tasks[0].active_tasks: not a field"),
    ({"active_tasks": [{"task_id": 3, "service_id": 42, "started": {
        "timestamp": "2026-01-01T00:00:00Z"}}]}, "active_tasks[0].service_id: not a field"),
])
def test_what_is_not_a_whole_service_is_refused_saying_where(change, message):
    rep = json.loads(service_line())
    rep.update(change)
    with pytest.raises(Invalid) as refused:
        export.document(rep, lifecycle.OFF, NOW)
    assert refused.value.message.startswith(message), refused.value.message


@pytest.mark.parametrize("raw, message", [
    (b"{", "not JSON: Expecting property name"),
    (b'{"a": NaN}', "not JSON: NaN is not a JSON number"),
    (b'{"a": 1e999}', "not JSON: number 1e999 is not finite"),
    (b"\xff", "not UTF-8"),
    (b"[" * 100_000, "not JSON: nested too deeply"),
])
def test_a_line_that_is_not_json_is_refused(raw, message):
    with pytest.raises(Invalid) as refused:
        export.parse(raw)
    assert refused.value.message.startswith(message)


# ------------------------------------------------------------------ lifecycle moments
POLICIES = [lifecycle.OFF, lifecycle.Policy(expiration=86400),
            lifecycle.Policy(auto_complete_after=3600),
            lifecycle.Policy(expiration=7 * 86400, by_type={"x": 600}, auto_complete_after=60)]


def stored(**extra):
    doc = {"service_id": 1, "customer_id": "C", "service_type": "x",
           "started": {"timestamp": "2026-03-01T08:00:00.000Z"}, "data": {}, "states": [],
           "tasks": [], "updated": "2026-03-01T11:59:30.250Z", **extra}
    return doc


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("extra", [
    {}, {"auto_complete_after": 0}, {"auto_complete_after": 7200},
    {"expires": "2026-03-05T00:00:00.000Z"},
    {"completed": {"timestamp": "2026-03-01T09:00:00.000Z"}},
    {"updated": "2026-03-01T11:59:59.999Z", "auto_complete_after": 1},
])
def test_the_lifecycle_moments_a_service_shows_come_back_on_import(policy, extra):
    """Exported at NOW, imported later under the same configuration: the service
    shows the same expiration_time and auto_complete_at, and time treats it alike."""
    doc = stored(**extra)
    assert lifecycle.settle(doc, policy, NOW)
    exported = export.whole({**doc, **lifecycle.shown(doc, policy)})
    later = NOW + timedelta(seconds=20)
    back = export.document(json.loads(json.dumps(exported)), policy, later)
    assert lifecycle.shown(back, policy) == lifecycle.shown(doc, policy)
    for moment in (later, NOW + timedelta(minutes=5), NOW + timedelta(days=30)):
        one, two = json.loads(json.dumps(doc)), json.loads(json.dumps(back))
        alive = lifecycle.settle(one, policy, moment)
        assert lifecycle.settle(two, policy, moment) == alive
        if alive:
            assert one.get("completed") == two.get("completed")
    assert back["due"] == lifecycle.timeutil.format(lifecycle.due(back, policy)) if (
        lifecycle.due(back, policy)) else "due" not in back


# ------------------------------------------------------------------ checking in blocks
def memory_store():
    from contextsvc.config import load
    from contextsvc.storage import open_store

    return open_store(load({"storage": {"engine": "memory"}}, environ={}))


def line(sid, customer="C"):
    return json.dumps({"service_id": sid, "customer_id": customer,
                       "started": {"timestamp": STAMP}, "n": sid}).encode() + b"\n"


def importer(store, jobs, on_conflict="fail"):
    checker = export.Importer(store, lifecycle.OFF, NOW, on_conflict, jobs=jobs)
    checker.BLOCK_LINES = 3  # blocks of three lines, one in two checked by another process
    return checker


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_lines_checked_in_blocks_by_several_processes_are_written_in_file_order(jobs):
    sids = [5, 3, 20, 4, 11, 7, 2, 9, 30, 12, 6]
    lines = [line(sid) for sid in sids]
    lines.insert(4, b"\n")
    store = memory_store()
    checker = importer(store, jobs)
    checked = checker.check(lines)
    assert checked.lines == {sid: n + (n > 4) for n, sid in enumerate(sids, 1)}
    assert checked.top[0] == 10 and checked.top[1].service_id == 30
    assert [r.service_id for r in checked.records()] == sids
    assert checker.load(checked.records(), checked).imported == len(sids)
    assert [doc["data"]["n"] for doc in store.scan()] == sorted(sids)
    assert store.last_id() == 30


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("lines, message", [
    # a bad line in a later block (another process's) than a repeated id: the repeat
    ([line(1), line(2), line(3), line(4), line(1), b"{", line(7)],
     "line 5: service 1 is also on line 1"),
    # a repeat after the bad line of the same block: the bad line
    ([line(1), line(2), line(3), b"[]", line(1)], "line 4: not an object"),
    # a repeat across blocks before a bad line of the repeating line's block
    ([line(1), line(2), line(3), line(4), line(2), b"{"], "line 5: service 2 is also on line 2"),
    ([line(1), line(2), line(3), line(4), line(5), line(6), line(2**53)],
     "line 7: service_id: not an integer"),
])
def test_the_first_fault_of_the_file_is_the_one_told_whichever_process_found_it(
        jobs, lines, message):
    store = memory_store()
    with pytest.raises(Invalid) as refused:
        importer(store, jobs).check(lines)
    assert refused.value.message.startswith(message), refused.value.message
    assert store.count() == 0 and store.last_id() == 0


# ------------------------------------------------------------------ exporting in blocks
def test_lines_made_by_several_processes_are_those_made_by_one():
    from contextsvc.domain.timed import TimedStore

    store = memory_store()
    docs = [stored(service_id=sid, data={"n": sid}) for sid in range(1, 12)]
    docs[2]["expires"] = "2026-03-01T11:00:00.000Z"  # expired: never exported
    docs[5]["completed"] = {"timestamp": "2026-03-01T09:00:00.000Z"}  # not active
    docs[7]["updated"] = "2026-03-01T10:00:00.000Z"  # idle: completed by time, not active
    store.put_services(docs)
    timed = TimedStore(store, lifecycle.Policy(auto_complete_after=3600), lambda: NOW)
    for selector in (export.Selector(), export.Selector(state="active")):
        for content in (True, False):
            one = list(export.lines(timed, selector, content, batch=3))
            assert list(export.lines(timed, selector, content, batch=3, jobs=2)) == one
            assert list(export.lines(timed, selector, content, batch=3, jobs=3)) == one
    assert [int(text) for text in one if text is not None] == [1, 2, 4, 5, 7, 9, 10, 11]


def _dies_in_a_worker(parent, n):
    if os.getpid() != parent:
        os._exit(1)  # as if killed (out of memory)
    return n


def test_a_worker_process_that_dies_fails_the_command_in_one_line():
    from contextsvc.errors import ContextError

    work = functools.partial(_dies_in_a_worker, os.getpid())
    with pytest.raises(ContextError, match="a worker process of the command stopped"):
        with export._InOrder(work, 2) as workers:
            list(workers.map((n,) for n in range(6)))
