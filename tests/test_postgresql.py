"""The postgresql engine beyond the store contract (tests/storage/test_contract.py):
its settings, its schema and commands, and what a client sees when the database
goes away, turns read-only or loses a connection during COMMIT. On a real
PostgreSQL (tests/pgcluster.py), never a mock."""

from __future__ import annotations

import threading
import time

import pytest

from contextsvc import create_app
from contextsvc.config import ConfigError, load
from contextsvc.errors import StoreFailure
from contextsvc.storage import open_store
from tests import pgcluster
from tests.commands import contextsvc, figures, one_line_failure
from tests.gunicorn_server import ROOT, Server, free_port

SECRET = "s3cret-Pa55"


def settings(cluster, schema=None, **storage):
    return {"storage": {"engine": "postgresql", "dsn": cluster.dsn,
                        "schema": schema or pgcluster.fresh_schema(), **storage},
            "lifecycle": {"sweep_interval": "1d"}}


def env(cluster, schema):
    return {"CONTEXTSVC_STORAGE_ENGINE": "postgresql", "CONTEXTSVC_STORAGE_DSN": cluster.dsn,
            "CONTEXTSVC_STORAGE_SCHEMA": schema}


def service(sid, customer="C"):
    return {"service_id": sid, "customer_id": customer, "data": {},
            "started": {"timestamp": "2026-01-01T00:00:00.000Z"}, "states": [], "tasks": []}


# ------------------------------------------------------------------ settings
@pytest.mark.parametrize("storage, expected", [
    ({"schema": "Bad-Name"}, "[storage] schema: 'Bad-Name' is not a schema name"),
    ({"schema": "pg_catalog"}, "[storage] schema: 'pg_catalog' is not a schema name"),
    ({"dsn": f"host=db password{SECRET}"}, "[storage] dsn: not a libpq connection string"),
    ({"pool_min": 5, "pool_max": 2}, "[storage] pool_max: must be at least [storage] pool_min"),
    ({"statement_timeout": "soon"}, "[storage] statement_timeout: expected a number"),
])
def test_bad_postgresql_settings_are_refused_in_one_line(storage, expected):
    with pytest.raises(ConfigError) as raised:
        load({"storage": {"engine": "postgresql", **storage}}, environ={})
    assert str(raised.value).startswith(expected)
    assert SECRET not in str(raised.value)


def test_the_file_engine_imports_no_psycopg():
    import subprocess
    import sys

    code = ("import sys; from contextsvc import create_app; import tempfile, os; "
            "d = tempfile.mkdtemp(); create_app({'storage': {'path': os.path.join(d, 'x.json')}}); "
            "print('psycopg' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={"PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "False", done.stderr


# ------------------------------------------------------------------ schema and commands
def test_db_upgrade_creates_the_schema_once(pg_cluster):
    schema = pgcluster.fresh_schema()
    first = figures(contextsvc("db", "upgrade", env=env(pg_cluster, schema)))
    assert first == {"schema": schema, "version": "1", "was": "0"}
    again = figures(contextsvc("db", "upgrade", env=env(pg_cluster, schema)))
    assert again == {"schema": schema, "version": "1", "was": "1"}
    assert pg_cluster.psql(f"SELECT version FROM {schema}.schema_version") == "1"


def test_db_upgrade_on_the_file_engine_says_it_has_no_schema(tmp_path):
    line = one_line_failure(contextsvc("db", "upgrade", path=tmp_path / "db.json",
                                       env={"CONTEXTSVC_STORAGE_ENGINE": "file"}))
    assert "engine = file has no database schema" in line


def test_check_compact_and_backup_say_what_they_do_on_postgresql(pg_cluster, tmp_path):
    schema = pgcluster.fresh_schema()
    client = create_app(settings(pg_cluster, schema)).test_client()
    sids = [client.post("/services/start", json={"customer_id": "C", "n": i}
                        ).get_json()["service_id"] for i in range(5)]
    for sid in sids[:3]:
        assert client.delete(f"/services/{sid}").status_code == 200
    checked = figures(contextsvc("check", env=env(pg_cluster, schema)))
    assert checked["store"].endswith(f"schema {schema}") and checked["services"] == "2"
    assert int(checked["reclaimable"]) > 0 and "PostgreSQL checks its own pages" in checked["note"]
    compacted = figures(contextsvc("compact", env=env(pg_cluster, schema)))
    assert compacted["services"] == "2"
    assert int(compacted["bytes after"]) < int(compacted["bytes before"])
    assert figures(contextsvc("check", env=env(pg_cluster, schema)))["reclaimable"] == "0"
    # the backup is a data file of the file engine, which a file store opens
    dest = tmp_path / "copy.json"
    backed = figures(contextsvc("backup", str(dest), env=env(pg_cluster, schema)))
    assert backed["services"] == "2"
    copy = open_store(load({"storage": {"path": str(dest)}}, environ={}))
    try:
        assert [doc["service_id"] for doc in copy.scan()] == sids[3:]
    finally:
        copy.close()
    assert "exists" in one_line_failure(contextsvc("backup", str(dest),
                                                   env=env(pg_cluster, schema)))


def test_check_finds_a_row_that_holds_another_document(pg_cluster):
    schema = pgcluster.fresh_schema()
    store = open_store(load(settings(pg_cluster, schema), environ={}))
    try:
        store.create_services([lambda sid: service(sid)] * 2)
    finally:
        store.close()
    pg_cluster.psql(f"UPDATE {schema}.services SET doc = (SELECT doc FROM {schema}.services "
                    "WHERE id = 1) WHERE id = 2")
    line = one_line_failure(contextsvc("check", env=env(pg_cluster, schema)))
    assert "the row of service 2 holds another document" in line


def test_a_document_keeps_its_key_order_and_any_json_string(pg_cluster):
    client = create_app(settings(pg_cluster)).test_client()
    body = '{"customer_id": "C", "zeta": 1, "alpha": "nul \\u0000 and \\ud800 lone", "mid": 2}'
    sid = client.post("/services/start", data=body,
                      content_type="application/json").get_json()["service_id"]
    got = client.get(f"/services/{sid}")
    assert got.status_code == 200
    keys = list(got.get_json())
    assert keys.index("zeta") < keys.index("alpha") < keys.index("mid")
    assert got.get_json()["alpha"] == "nul \u0000 and \ud800 lone"


def test_a_customer_id_holding_nul_is_found_and_kept_apart(pg_cluster):
    client = create_app(settings(pg_cluster)).test_client()
    for customer in ("a\u0000b", "a\ufffdb"):
        assert client.post("/services/start", json={"customer_id": customer}).status_code == 201
    got = client.get("/customers/a%00b/services")
    assert got.status_code == 200
    assert [doc["customer_id"] for doc in got.get_json()] == ["a\u0000b"]


def test_keys_holding_a_lone_surrogate_are_stored_and_kept_apart(pg_cluster):
    """\ud800 is a valid JSON string that UTF-8, and so PostgreSQL's text, cannot hold:
    the columns hold U+FFFD in its place, and a lookup tells the two apart."""
    client = create_app(settings(pg_cluster)).test_client()
    sids = []
    for customer, contact in (("a\ud800b", "k\udfff"), ("a\ufffdb", "k\ufffd")):
        for body in ({"customer_id": customer, "service_type": customer},
                     {"contact_key": contact}):
            answer = client.post("/services/start", json=body)
            assert answer.status_code == 201, answer.get_json()
            sids.append(answer.get_json()["service_id"])
    got = client.get(f"/services/{sids[0]}").get_json()
    assert got["customer_id"] == "a\ud800b" and got["service_type"] == "a\ud800b"
    # a URL cannot name a lone surrogate (UTF-8 again): the U+FFFD ones are found alone
    found = client.get("/customers/a%EF%BF%BDb/services").get_json()
    assert [doc["service_id"] for doc in found] == [sids[2]]
    found = client.get("/services/anonymous/k%EF%BF%BD").get_json()
    assert [doc["service_id"] for doc in found] == [sids[3]]
    assert client.get(f"/services/{sids[1]}").get_json()["contact_key"] == "k\udfff"


# ------------------------------------------------------------------ the database misbehaving
def test_a_dsn_that_cannot_connect_stops_the_server_without_the_password(tmp_path):
    dsn = f"host=127.0.0.1 port={free_port()} user=x password={SECRET} connect_timeout=3"
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "python:contextsvc.gunicorn_conf", "-w", "2",
         "-b", f"127.0.0.1:{free_port()}", "wsgi:app"], cwd=ROOT, capture_output=True,
        text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "CONTEXTSVC_STORAGE_ENGINE": "postgresql",
             "CONTEXTSVC_STORAGE_DSN": dsn})
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("contextsvc:")]
    assert len(lines) == 1 and lines[0].startswith("contextsvc: error: [storage] dsn: "), \
        done.stderr
    assert "Connection refused" in lines[0] or "connection" in lines[0].lower()
    assert SECRET not in done.stderr + done.stdout


def test_a_database_that_goes_away_answers_503_then_recovers():
    why = pgcluster.missing()
    if why is not None:
        pytest.skip(why)
    cluster = pgcluster.Cluster()  # its own: this test stops it
    try:
        client = create_app(settings(cluster, lock_timeout=1)).test_client()
        sid = client.post("/services/start", json={"customer_id": "C"}).get_json()["service_id"]
        cluster.stop("fast")
        for answer in (client.get(f"/services/{sid}"),
                       client.post("/services/start", json={"customer_id": "C"})):
            assert answer.status_code == 503
            assert answer.get_json()["exception"] == "ServiceUnavailable"
            assert answer.headers["Retry-After"] in ("1", "5")
        health = client.get("/health")
        assert health.status_code == 503 and health.get_json()["status"] == "unavailable"
        cluster.start()
        deadline = time.monotonic() + 60
        while client.get(f"/services/{sid}").status_code != 200:
            assert time.monotonic() < deadline, "no recovery after the database came back"
            time.sleep(0.5)
        assert client.post("/services/start", json={"customer_id": "C"}).status_code == 201
    finally:
        cluster.close()


def test_a_read_only_database_serves_reads_and_answers_503_to_writes(pg_cluster):
    name = pgcluster.fresh_schema()
    pg_cluster.psql(f"CREATE DATABASE {name}")
    dsn = pg_cluster.dsn.replace("dbname=postgres", f"dbname={name}")
    config = {"storage": {"engine": "postgresql", "dsn": dsn, "schema": "contextsvc"},
              "lifecycle": {"sweep_interval": "1d"}}
    store = open_store(load(config, environ={}))
    try:
        store.create_service(lambda sid: service(sid))
    finally:
        store.close()  # its pool with it: the next connections are read-only
    pg_cluster.psql(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    client = create_app(config).test_client()
    assert client.get("/services/1").status_code == 200
    answer = client.post("/services/start", json={"customer_id": "C"})
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert "read-only" in answer.get_json()["message"]


def test_a_connection_lost_during_commit_is_reported_as_an_unknown_outcome(pg_cluster):
    schema = pgcluster.fresh_schema()
    store = open_store(load(settings(pg_cluster, schema), environ={}))
    try:
        # a deferred trigger runs at COMMIT: the connection is cut while it sleeps (the
        # write's last statements and its COMMIT are one query)
        pg_cluster.psql(
            f"CREATE FUNCTION {schema}.slow() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(5); RETURN NULL; END $$; "
            f"CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON {schema}.services "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.slow()")
        killed = []

        def kill() -> None:
            for _ in range(100):
                out = pg_cluster.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                      "WHERE query LIKE '%COMMIT' AND state = 'active' "
                                      "AND pid <> pg_backend_pid()")
                if out:
                    killed.append(out)
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill)
        killer.start()
        with pytest.raises(StoreFailure, match="may or may not have been made"):
            store.create_service(lambda sid: service(sid))
        killer.join()
        assert killed
        pg_cluster.psql(f"DROP TRIGGER slow ON {schema}.services")
        assert store.create_service(lambda sid: service(sid))["service_id"] == 2
    finally:
        store.close()


def test_a_commit_held_past_the_statement_timeout_after_quick_ones_is_given_up(pg_cluster):
    """A COMMIT that waits for a synchronous standby no one runs is given up at the
    statement timeout (503, outcome unknown), also right after quick COMMITs (the
    watchdog that gives it up was then asleep until an earlier deadline)."""
    schema = pgcluster.fresh_schema()
    # the test cluster does not wait for its flush (synchronous_commit off on its command
    # line): the sessions the store opens do (a database's setting wins over it)
    pg_cluster.psql("ALTER DATABASE postgres SET synchronous_commit = on")
    store = open_store(load(settings(pg_cluster, schema, statement_timeout=1), environ={}))
    try:
        store.create_service(lambda sid: service(sid))
        pg_cluster.psql("ALTER SYSTEM SET synchronous_standby_names = 'nobody_runs_this'")
        pg_cluster.psql("SELECT pg_reload_conf()")
        time.sleep(0.5)  # the store's session reads the new setting at its next query
        outcome: list[str] = []

        def write() -> None:
            try:
                store.create_service(lambda sid: service(sid))
                outcome.append("acknowledged")
            except StoreFailure as exc:
                outcome.append(exc.message)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        writer.join(10)  # not given up: it waits until the setting is reset below
        assert outcome and "did not confirm the write within 1 s" in outcome[0], outcome
    finally:
        pg_cluster.psql("ALTER SYSTEM RESET synchronous_standby_names")
        pg_cluster.psql("SELECT pg_reload_conf()")
        pg_cluster.psql("ALTER DATABASE postgres RESET synchronous_commit")
        store.close()
    # committed on this server all the same: reported unknown, not undone
    assert pg_cluster.psql(f"SELECT count(*) FROM {schema}.services") == "2"


def test_a_write_that_fails_before_its_commit_changes_nothing(pg_cluster):
    """A write's last statements go in one round trip with its COMMIT: when one
    of them fails, the server skips the COMMIT, and nothing of the write stays."""
    schema = pgcluster.fresh_schema()
    store = open_store(load(settings(pg_cluster, schema), environ={}))
    try:
        first = store.create_service(lambda sid: service(sid, "kept"))
        pg_cluster.psql(
            f"CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN IF NEW.customer_id = 'refused' THEN RAISE 'refused here'; END IF; "
            "RETURN NEW; END $$; "
            f"CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON {schema}.services "
            f"FOR EACH ROW EXECUTE FUNCTION {schema}.refuse()")
        with pytest.raises(StoreFailure, match="refused here.*nothing was changed"):
            store.create_service(lambda sid: service(sid, "refused"))

        def refuse(doc):
            doc["customer_id"] = "refused"

        with pytest.raises(StoreFailure, match="refused here.*nothing was changed"):
            store.update_service(first["service_id"], refuse)
        assert store.count() == 1 and store.stats().services == 1
        assert store.get_service(first["service_id"])["customer_id"] == "kept"
        assert [doc["customer_id"] for doc in store.customer_services("refused")] == []
        again = store.create_service(lambda sid: service(sid, "kept"))
        assert again["service_id"] > first["service_id"] and store.count() == 2
    finally:
        store.close()


def test_a_sequence_at_its_end_answers_503_and_changes_nothing(pg_cluster):
    """Service ids end at 2^53 - 1 (what a JSON number holds exactly): a start after
    the last one is a 503 that says so, whether or not it carries a retry key."""
    schema = pgcluster.fresh_schema()
    client = create_app(settings(pg_cluster, schema)).test_client()
    start = "/genesys/1/cs/services/start"
    first = client.post(start, json={"customer_id": "C"}).get_json()["service_id"]
    pg_cluster.psql(f"SELECT setval('{schema}.service_ids', 9007199254740991)")
    for headers in ({}, {"Idempotency-Key": "k-1"}):
        r = client.post(start, json={"customer_id": "C"}, headers=headers)
        assert r.status_code == 503, r.get_data()
        assert "No service ids are left" in r.get_json()["message"]
    found = client.get("/genesys/1/cs/customers/C/services").get_json()
    assert [s["service_id"] for s in found] == [first]


def test_writers_wait_for_a_counter_row_when_every_one_is_held(pg_cluster):
    """Each write adds to one of a few counter rows, one no other transaction
    holds. When all of them are held, it waits for its own, and counts once."""
    import psycopg

    schema = pgcluster.fresh_schema()
    store = open_store(load(settings(pg_cluster, schema), environ={}))
    holder = psycopg.connect(pg_cluster.dsn, autocommit=True)
    try:
        store.create_service(lambda sid: service(sid))
        holder.execute("BEGIN")
        holder.execute(f"SELECT * FROM {schema}.counters FOR UPDATE")
        done = []
        writer = threading.Thread(
            target=lambda: done.append(store.create_service(lambda sid: service(sid))))
        writer.start()
        writer.join(1.0)
        assert writer.is_alive() and not done  # waiting for a counter row
        holder.execute("COMMIT")
        writer.join(30)
        assert done and store.count() == 2 and store.stats().services == 2
    finally:
        holder.close()
        store.close()


# ------------------------------------------------------------------ two app servers
def test_two_app_servers_on_one_database_lose_and_duplicate_no_write(pg_cluster, tmp_path):
    """Two gunicorn servers, two workers each, on one schema: concurrent creates and
    updates through both; every acknowledged write is there, read through either
    server right after it was acknowledged by the other; ids are never handed out
    twice; a find-or-create race between them makes one service."""
    schema = pgcluster.fresh_schema()
    servers = [Server(str(tmp_path / f"node{n}"), workers=2,
                      extra_env=env(pg_cluster, schema)) for n in (1, 2)]
    try:
        made: list[int] = []
        lost: list[str] = []
        lock = threading.Lock()

        def work(t: int) -> None:
            one, other = servers[t % 2], servers[(t + 1) % 2]
            for i in range(30):
                status, body, _ = one.request("POST", "/services/start",
                                              {"customer_id": f"T{t}", "n": i})
                if status != 201:
                    lost.append(f"start {status} {body}")
                    continue
                sid = body["service_id"]
                status, doc, _ = other.request("GET", f"/services/{sid}")  # read your write
                if status != 200 or doc["n"] != i:
                    lost.append(f"read {sid} {status} {doc}")
                status, _, _ = other.request("PUT", f"/services/{sid}/extensions/v", i)
                if status != 200:
                    lost.append(f"update {sid} {status}")
                with lock:
                    made.append(sid)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not lost
        assert len(made) == len(set(made)) == 180
        for t in range(6):
            for server in servers:
                status, docs, _ = server.request("GET", f"/customers/T{t}/services")
                assert status == 200 and sorted(d["n"] for d in docs) == list(range(30))
                assert all(d["v"] == d["n"] for d in docs)

        ids = []

        def race(server: Server) -> None:
            body = {"services": [{"service": {"customer_id": "race", "service_type": "x"}}]}
            status, answer, _ = server.request("POST", "/services_composite/start", body)
            assert status == 200, answer
            ids.append(answer["services"][0]["service_id"])

        racers = [threading.Thread(target=race, args=(servers[n % 2],)) for n in range(8)]
        for thread in racers:
            thread.start()
        for thread in racers:
            thread.join()
        assert len(ids) == 8 and len(set(ids)) == 1
    finally:
        for server in servers:
            server.stop()


# ------------------------------------------------------------------ tenants
def test_tenants_each_have_a_schema_of_their_own(pg_cluster, tmp_path):
    """API.md 8.2 on this engine: one schema per tenant, ids per tenant, nothing of
    one tenant in the other's answers, the command on the tenant it names, and
    ``db upgrade`` on every tenant's schema."""
    acme, globex = pgcluster.fresh_schema(), pgcluster.fresh_schema()
    tenants = {"acme": acme, "globex": globex, "globex.id": "7", "default": "acme"}
    client = create_app({**settings(pg_cluster), "tenants": tenants}).test_client()
    for tenant in ("acme", "7"):
        r = client.post("/services/start", json={"customer_id": "C", "who": tenant},
                        headers={"ContactCenterId": tenant})
        assert r.status_code == 201 and r.get_json()["service_id"] == 1
    assert [s["who"] for s in client.get("/customers/C/services").get_json()] == ["acme"]
    assert [s["who"] for s in client.get("/customers/C/services",
                                         headers={"ContactCenterId": "globex"}).get_json()
            ] == ["7"]
    assert pg_cluster.psql(f"SELECT count(*) FROM {acme}.services") == "1"

    ini = tmp_path / "tenants.ini"
    ini.write_text("[tenants]\n" + "".join(f"{k} = {v}\n" for k, v in tenants.items()))
    base = {**env(pg_cluster, "unused"), "CONTEXTSVC_CONFIG": str(ini)}
    exported = contextsvc("export", "--tenant", "globex", env=base)
    assert exported.returncode == 0 and '"who":"7"' in exported.stdout.replace(" ", "")
    assert '"acme"' not in exported.stdout
    upgraded = contextsvc("db", "upgrade", env=base)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"schema: {acme}\n" in upgraded.stdout and f"schema: {globex}\n" in upgraded.stdout
    one = contextsvc("db", "upgrade", "--tenant", "7", env=base)
    assert one.returncode == 0 and acme not in one.stdout and globex in one.stdout


@pytest.mark.parametrize("tenants, says", [
    ({"acme": "Not-A-Schema"}, "[tenants] acme: 'Not-A-Schema' is not a schema name"),
    ({"acme": "same", "globex": "same"}, "[tenants] globex: the schema same is the store of "
                                         "acme too"),
])
def test_bad_tenant_schemas_are_refused_naming_the_key(pg_cluster, tenants, says):
    with pytest.raises(ConfigError) as caught:
        load({**settings(pg_cluster), "tenants": tenants}, environ={})
    assert str(caught.value).startswith(says), str(caught.value)
