"""``contextsvc demo`` as installed: the seeds' stories and the varied journeys it
loads, read back through the API the way a user would (the Flask test client, and a
real gunicorn serving the same file while the command writes)."""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from gunicorn_server import Server

from contextsvc import create_app
from contextsvc.domain import timeutil

COMMAND = shutil.which("contextsvc", path=os.path.dirname(sys.executable))
NOW = "2026-03-10T12:00:00.000Z"
B = "/genesys/1/cs"
ALL = {"active_states": "true", "completed_states": "true", "active_tasks": "true",
       "completed_tasks": "true"}
LOOKUP = re.compile(r"curl -s '([^']+)'")


def demo(db: str, *args: str, env: dict[str, str] | None = None,
         **kwargs) -> subprocess.CompletedProcess:
    assert COMMAND, "the contextsvc command is installed with the package"
    environ = {**os.environ, "CONTEXTSVC_STORAGE_PATH": db, **(env or {})}
    environ.pop("CONTEXTSVC_CONFIG", None)
    return subprocess.run([COMMAND, "demo", *args], capture_output=True, text=True,
                          timeout=120, env=environ, **kwargs)


def summary(result: subprocess.CompletedProcess) -> dict:
    """What the command's one line says."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    match = re.match(r"loaded (\d+) services \((\d+) active\) of (\d+) customers and (\d+) "
                     r"anonymous services, ids (\d+) to (\d+); try ", lines[0])
    assert match, lines[0]
    services, active, customers, anonymous, first, last = map(int, match.groups())
    return {"services": services, "active": active, "customers": customers,
            "anonymous": anonymous, "ids": (first, last),
            "lookups": LOOKUP.findall(lines[0]), "line": lines[0]}


def client_of(db: str, **settings):
    return create_app({"storage": {"path": db}, **settings}).test_client()


def get(client, path: str, **params):
    r = client.get(path, query_string=params)
    assert r.status_code == 200, (path, r.get_json())
    return r.get_json()


def every_service(client, ids: tuple[int, int]) -> list[dict]:
    """Every service the command wrote, by the ids it printed."""
    return [get(client, f"{B}/services/{sid}", **ALL) for sid in range(ids[0], ids[1] + 1)]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("demo") / "db.json")
    out = summary(demo(db, "--now", NOW))
    return db, out, client_of(db)


def by_id(items: list[dict], key: str) -> list[dict]:
    return sorted(items, key=lambda item: item[key])


# ---------------------------------------------------------------- the stories
def test_the_dropped_wireless_caller_is_resumed_associated_and_completed(loaded):
    _, _, client = loaded
    services = get(client, f"{B}/customers/ABC1234/services", **ALL)
    assert all(s["customer_id"] == "ABC1234" and s["demo"] is True for s in services)
    [account] = [s for s in services if s["service_type"] == "new-wireless-account"]
    assert account["contact_key"] == "408-832-7799"
    assert account["disposition"] == 10 and account["disposition_desc"] == "account opened"
    assert account["verified_by"] == "agent" and account["ivr_path"] == ["main", "sales"]
    # the associate body updated the start event: the agent's call and desk
    assert account["started"]["interaction_id"] == "CALL-0002"
    assert account["started"]["resource_id"] == 5005
    assert account["active_states"] == [] and account["active_tasks"] == []

    states = account["completed_states"]
    assert [s["state_type"] for s in states] == ["ivr-menu", "agent-queue", "account-setup"]
    assert [s.get("previous_state_id") for s in states] == [None, 1, 2]
    # consecutive: each transition completes one state at the instant the next starts
    for before, after in zip(states, states[1:], strict=False):
        assert before["completed"]["timestamp"] == after["started"]["timestamp"]
    queue = states[1]
    assert queue["queue"] == "wireless-sales"
    assert queue["call_dropped"] == {"interaction_id": "IVR-0001", "waited_seconds": 604}
    # the call dropped in the queue; the caller rang back ~25 minutes after it started
    assert queue["duration"] > 20 * 60 * 1000

    tasks = account["completed_tasks"]
    assert [(t["task_type"], t["state_id"]) for t in tasks] == [
        ("identify-caller", 1), ("select-service", 1), ("confirm-resume", 2),
        ("credit-check", 3), ("choose-plan", 3), ("port-number", 3), ("order-device", 3)]
    starts = [t["started"]["timestamp"] for t in tasks]
    assert starts == sorted(starts)
    resume = tasks[2]
    assert resume["started"]["interaction_id"] == "IVR-0002"
    assert resume["found_by"] == "contact_key" and resume["disposition"] == "confirmed"
    assert tasks[0]["disposition"] == "not-identified"
    # the service was completed after its last task
    assert account["completed"]["timestamp"] >= tasks[-1]["completed"]["timestamp"]

    # the phone's delivery came after the call
    [delivery] = [s for s in services if s["service_type"] == "device-delivery"]
    assert delivery["order_id"] == "WO-778102" and delivery["items"] == ["Pixel 8"]
    assert delivery["started"]["timestamp"] > account["completed"]["timestamp"]


def test_contact_key_queries_find_anonymous_services_only(loaded):
    _, _, client = loaded
    # the dropped caller's number: the account service is associated now, so only
    # the older coverage check nobody identified is listed (API.md 3.4)
    found = get(client, f"{B}/services/anonymous/408-832-7799", **ALL)
    assert [s["service_type"] for s in found] == ["coverage-check"]
    assert "customer_id" not in found[0] and "completed" in found[0]
    assert get(client, f"{B}/services/anonymous/408-832-7799/active") == []

    # the caller still waiting: an active anonymous service to resume
    [waiting] = get(client, f"{B}/services/anonymous/408-555-0142/active", **ALL)
    assert "customer_id" not in waiting and "completed" not in waiting
    assert waiting["service_type"] == "billing-question"
    assert [s["state_type"] for s in waiting["active_states"]] == ["agent-queue"]
    assert waiting["active_states"][0]["call_dropped"] == {"waited_seconds": 372}
    assert [s["state_type"] for s in waiting["completed_states"]] == ["ivr-menu"]


def test_the_hotel_booking_has_three_states_and_their_tasks(loaded):
    _, _, client = loaded
    [hotel] = get(client, f"{B}/customers/0004Va58A92T0018/services", **ALL)
    assert hotel["service_type"] == "hotel-reservation"
    assert hotel["disposition"] == 10 and hotel["disposition_desc"] == "booked"
    assert hotel["coupon"] == {"coupon_name": "DISCOUNTCODE15"}
    assert hotel["contact_key"] == "traveller0018@example.com"
    assert hotel["active_states"] == [] and hotel["active_tasks"] == []
    states = hotel["completed_states"]
    assert [s["state_type"] for s in states] == [
        "collect-search-information", "get-proposals", "validate-proposal"]
    tasks = {s["state_id"]: [t["task_type"] for t in hotel["completed_tasks"]
                             if t["state_id"] == s["state_id"]] for s in states}
    assert list(tasks.values()) == [
        ["collect-time-information", "collect-localisation-information",
         "collect-hotel-criteria"],
        ["search-offers", "propose-offers", "get-detailed-information"],
        ["get-customer-approval", "make-payment", "validate-reservation",
         "send-bills-by-email", "collect-customer-feedback"]]
    # the seed's transition: Satisfaction on the state it completed, Sponsoring on
    # the one it started
    assert [p["place"] for p in states[1]["Satisfaction"]] == [
        "Terranova mexico resort", "Fancy resort Paris"]
    assert states[1]["disposition_desc"] == "SUCCESS"
    assert states[2]["Sponsoring"]["notes"] == "give customer free meal"
    assert states[2]["est_duration"] == 500
    feedback = hotel["completed_tasks"][-1]
    assert feedback["Feedback"]["rating"] == 7
    # the survey came after the stay
    assert feedback["started"]["timestamp"] > hotel["completed_tasks"][0]["departure"]
    # the same states through the state routes
    listed = get(client, f"{B}/services/{hotel['service_id']}/states/completed",
                 completed_tasks="true")
    assert [len(s["completed_tasks"]) for s in listed] == [3, 3, 5]


# ---------------------------------------------------------------- the crowd
def test_a_few_dozen_customers_over_a_few_weeks_active_and_completed(loaded):
    _, out, client = loaded
    services = every_service(client, out["ids"])
    assert len(services) == out["services"] == out["ids"][1] - out["ids"][0] + 1
    assert all(s["demo"] is True for s in services)
    customers = {s["customer_id"] for s in services if "customer_id" in s}
    assert len(customers) == out["customers"]
    assert 30 <= len(customers) <= 38  # 36 by default, and the two of the stories
    anonymous = [s for s in services if "customer_id" not in s]
    assert len(anonymous) == out["anonymous"] >= 5
    active = [s for s in services if "completed" not in s]
    assert len(active) == out["active"]
    assert 5 <= len(active) <= len(services) - 30
    # customers with several services, of several kinds
    per_customer = {c: [s for s in services if s.get("customer_id") == c] for c in customers}
    assert sum(len(v) >= 3 for v in per_customer.values()) >= 5
    kinds = {s["service_type"] for s in services}
    assert {"new-wireless-account", "tech-support", "billing-dispute", "device-delivery",
            "plan-change", "upgrade-device", "hotel-reservation"} <= kinds
    # anonymous services on phone numbers and on e-mail addresses
    assert any("@" in s["contact_key"] for s in anonymous)
    assert any(re.fullmatch(r"\d{3}-555-01\d\d", s["contact_key"]) for s in anonymous)
    # a web visit later associated with a customer who called
    assert any(s["service_type"] == "upgrade-device" and "@" in s.get("contact_key", "")
               and "customer_id" in s for s in services)
    # services the API started completed (auto_closed), and none auto-completed: the
    # default configuration completes nothing by itself
    assert any(s["duration"] == 0 and s["completed"]["timestamp"] == s["started"]["timestamp"]
               for s in services if "completed" in s)
    nested = [r for s in services
              for r in [s] + s["completed_states"] + s["completed_tasks"] if "completed" in r]
    assert not any(r["completed"].get("auto_completed") for r in nested)
    # some active states idle for days
    now = timeutil.parse(NOW)
    idle = [st for s in active for st in s["active_states"]
            if now - timeutil.parse(st["started"]["timestamp"]) > timedelta(days=2)]
    assert idle
    # every event is in the three weeks before --now
    stamps = [r[e]["timestamp"] for s in services
              for r in [s] + s["active_states"] + s["completed_states"] + s["active_tasks"]
              + s["completed_tasks"] for e in ("started", "completed") if e in r]
    assert all(timeutil.format(now - timedelta(weeks=3)) <= t <= NOW for t in stamps)
    # ids were handed out in start order
    started = [s["started"]["timestamp"] for s in services]
    # the associate body does not move a start, so the order holds
    assert started == sorted(started)


def test_the_lookups_printed_work(loaded):
    _, out, client = loaded
    assert len(out["lookups"]) == 2
    customer, contact = out["lookups"]
    assert customer.startswith("http://127.0.0.1:8080/genesys/1/cs/customers/ABC1234/services")
    assert contact.startswith(
        "http://127.0.0.1:8080/genesys/1/cs/services/anonymous/408-555-0142/active")
    for url in out["lookups"]:
        r = client.get(url.removeprefix("http://127.0.0.1:8080"))
        assert r.status_code == 200
        assert r.get_json() and all(s["demo"] is True for s in r.get_json())
    answer = client.get(customer.removeprefix("http://127.0.0.1:8080")).get_json()
    assert all("completed_states" in s and "active_tasks" in s for s in answer)


def test_the_journey_pages_printed_are_served(loaded):
    _, out, client = loaded
    pages = re.search(r"or open the journey page: (\S+) and (\S+?)(?:;|$)", out["line"])
    assert pages, out["line"]
    assert pages.groups() == (
        "http://127.0.0.1:8080/genesys/1/cs/journey?customer_id=ABC1234",
        "http://127.0.0.1:8080/genesys/1/cs/journey?contact_key=408-555-0142")
    for url in pages.groups():
        r = client.get(url.removeprefix("http://127.0.0.1:8080"))
        assert r.status_code == 200 and r.mimetype == "text/html"


# ---------------------------------------------------------------- determinism, reruns
@pytest.mark.file_engine("several stores in one test")
def test_the_same_seed_gives_the_same_data_and_another_seed_other_data(tmp_path, loaded):
    _, out, client = loaded
    first = every_service(client, out["ids"])
    again = str(tmp_path / "again.json")
    out2 = summary(demo(again, "--now", NOW, "--seed", "1"))
    assert out2["line"] == out["line"]
    assert every_service(client_of(again), out2["ids"]) == first

    other = str(tmp_path / "other.json")
    out3 = summary(demo(other, "--now", NOW, "--seed", "2"))
    changed = every_service(client_of(other), out3["ids"])
    assert changed != first
    # the stories are the same whatever the seed
    c = client_of(other)
    [hotel] = get(c, f"{B}/customers/0004Va58A92T0018/services", **ALL)
    [hotel1] = get(client, f"{B}/customers/0004Va58A92T0018/services", **ALL)
    assert {k: v for k, v in hotel.items() if k != "service_id"} == {
        k: v for k, v in hotel1.items() if k != "service_id"}


def test_a_second_run_is_refused_unless_forced(tmp_path):
    db = str(tmp_path / "db.json")
    first = summary(demo(db, "--now", NOW, "--customers", "4", "--weeks", "1"))
    assert first["customers"] >= 2 + 1  # the stories' two and some of the four

    refused = demo(db, "--now", NOW, "--customers", "4")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("contextsvc: error: the store already holds the demo")
    assert len(refused.stderr.splitlines()) == 1
    client = client_of(db)
    last = first["ids"][1]
    assert client.get(f"{B}/services/{last + 1}").status_code == 404

    forced = summary(demo(db, "--now", NOW, "--customers", "4", "--weeks", "1", "--force"))
    assert forced["ids"] == (last + 1, last + first["services"])
    assert len(get(client, f"{B}/customers/0004Va58A92T0018/services")) == 2


@pytest.mark.parametrize("now", ["2026-03-10T00:00:00.000Z", "2026-03-10T10:00:00.000Z"])
def test_the_stories_play_out_early_in_the_day_too(tmp_path, now):
    """Run just after midnight (UTC) or in the morning, the fixed stories are as late
    in the evening: the wireless caller's phone has been delivered, and the waiting
    caller dropped out of the queue the evening before, many hours ago."""
    db = str(tmp_path / "db.json")
    summary(demo(db, "--now", now))
    client = client_of(db)
    services = get(client, f"{B}/customers/ABC1234/services", **ALL)
    [delivery] = [s for s in services if s["service_type"] == "device-delivery"]
    assert "completed" in delivery
    [waiting] = get(client, f"{B}/services/anonymous/408-555-0142", **ALL)
    called = timeutil.parse(waiting["started"]["timestamp"])
    assert timedelta(hours=12) < timeutil.parse(now) - called < timedelta(days=2)


def test_the_demo_on_a_memory_store_and_a_bad_timestamp_fail(tmp_path):
    db = str(tmp_path / "db.json")
    result = demo(db, env={"CONTEXTSVC_STORAGE_ENGINE": "memory"})
    assert result.returncode == 1 and "memory engine" in result.stderr
    result = demo(db, "--now", "yesterday")
    assert result.returncode == 2 and "--now" in result.stderr
    assert not os.path.exists(db)


def test_idle_services_complete_only_when_the_lifecycle_says_so(tmp_path):
    """With auto-complete configured, the services idle longer than the period read as
    the rule completes them: at their last event plus the period."""
    db = str(tmp_path / "db.json")
    out = summary(demo(db, env={"CONTEXTSVC_LIFECYCLE_AUTO_COMPLETE_AFTER": "4h"}))
    assert re.search(r"; under the \[lifecycle\] settings, \d+ auto-completed$", out["line"])
    client = client_of(db, lifecycle={"auto_complete_after": 4 * 3600})
    [waiting] = get(client, f"{B}/services/anonymous/408-555-0142", **ALL)
    assert waiting["completed"]["auto_completed"] is True
    queue = waiting["completed_states"][-1]
    assert queue["state_type"] == "agent-queue" and queue["completed"]["auto_completed"]
    # the last write to it was the dropped call: 6 min 12 s after the queue started
    last = timeutil.parse(queue["started"]["timestamp"]) + timedelta(minutes=6, seconds=12)
    assert waiting["completed"]["timestamp"] == timeutil.format(last + timedelta(hours=4))
    # a completed story is as it was
    [hotel] = get(client, f"{B}/customers/0004Va58A92T0018/services")
    assert "auto_completed" not in hotel["completed"]


def test_progress_shows_on_a_terminal(tmp_path):
    db = str(tmp_path / "db.json")
    master, slave = pty.openpty()
    try:
        env = {**os.environ, "CONTEXTSVC_STORAGE_PATH": db}
        env.pop("CONTEXTSVC_CONFIG", None)
        result = subprocess.run([COMMAND, "demo", "--customers", "60"], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=slave, timeout=120)
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert result.returncode == 0
    assert b"demo journeys" in shown
    assert result.stdout.count("\n") == 1


# ---------------------------------------------------------------- under a server
def test_the_demo_loads_into_a_running_server_while_it_takes_writes(tmp_path):
    db = str(tmp_path / "db.json")
    server = Server(db, workers=2)
    try:
        before = server.request("POST", f"{B}/services/start", {"customer_id": "ABC1234"})
        assert before[0] == 201
        written, answers, failed, stop = [], [], [], threading.Event()

        def writer():
            # (an assertion failing in a thread would only end the thread)
            try:
                while not stop.is_set():
                    status, body, _ = server.request("POST", f"{B}/services/start",
                                                     {"contact_key": "408-555-0199"})
                    answers.append((time.monotonic(), status))
                    if status == 201:
                        written.append(body["service_id"])
            except Exception as exc:  # noqa: BLE001 - reported below
                failed.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            began = time.monotonic()
            result = demo(db, "--url", f"http://127.0.0.1:{server.port}{B}")
            ended = time.monotonic()
        finally:
            stop.set()
            thread.join()
        out = summary(result)
        assert not failed
        assert [status for _, status in answers if status != 201] == []
        # the command starts in hundreds of milliseconds: writes overlap its loading
        assert any(began < at < ended for at, _ in answers)

        # the printed lookups, against the server
        for url in out["lookups"]:
            path = url.removeprefix(f"http://127.0.0.1:{server.port}")
            status, body, _ = server.request("GET", path)
            assert status == 200 and any(s.get("demo") is True for s in body)
        status, mine, _ = server.request("GET", f"{B}/customers/ABC1234/services")
        assert status == 200
        # oldest first: the demo's are in the past, the one started just now is last
        assert mine[-1]["service_id"] == before[1]["service_id"]
        assert sum(s.get("demo") is True for s in mine) >= 2

        # every id once: the server's and the demo's writes all kept
        demo_ids, server_ids = [], []
        for sid in range(1, max(out["ids"][1], *written, 0) + 1):
            status, body, _ = server.request("GET", f"{B}/services/{sid}")
            assert status == 200, sid
            (demo_ids if body.get("demo") else server_ids).append(sid)
        assert len(demo_ids) == out["services"]
        assert sorted(server_ids) == sorted([before[1]["service_id"], *written])
        # and every event happened before the command ran
        status, services, _ = server.request(
            "GET", f"{B}/customers/0004Va58A92T0018/services?completed_tasks=true")
        assert status == 200
        assert services[0]["completed"]["timestamp"] < timeutil.now()
    finally:
        server.stop()
