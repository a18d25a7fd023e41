"""The JSON-file store, seen through the API and through plain TinyDB."""

import json
import os

import pytest
from tinydb import TinyDB

from contextsvc import create_app
from contextsvc.config import ConfigError
from contextsvc.errors import StoreCorrupt

pytestmark = pytest.mark.file_engine  # about the data file


def make(path, **storage):
    return create_app({"storage": {"path": str(path), **storage}}).test_client()


def test_data_survives_a_restart_and_ids_continue(tmp_path):
    path = tmp_path / "db.json"
    client = make(path)
    a = client.post("/services/start", json={"customer_id": "C1", "x": [1, "é"]}).get_json()
    b = client.post("/services/start", json={"contact_key": "k"}).get_json()
    client.post(f"/services/{a['service_id']}/states/start", json={"state_type": 1})
    assert client.delete(f"/services/{b['service_id']}").status_code == 200

    again = make(path)
    doc = again.get(f"/services/{a['service_id']}?active_states=true").get_json()
    assert doc["x"] == [1, "é"] and doc["active_states"][0]["state_type"] == 1
    assert again.get(f"/services/{b['service_id']}").status_code == 404
    c = again.post("/services/start", json={"contact_key": "k"}).get_json()
    assert c["service_id"] > b["service_id"]


def test_plain_tinydb_reads_the_file(tmp_path):
    path = tmp_path / "db.json"
    client = make(path)
    sid = client.post("/services/start", json={"contact_key": "k", "note": "first"}
                      ).get_json()["service_id"]
    client.post(f"/customers/C7/services/{sid}", json={"note": "second"})
    client.post(f"/services/{sid}/tasks/start", json={"task_type": 2})
    with TinyDB(path, access_mode="r") as db:
        services = db.table("services")
        doc = services.get(doc_id=sid)
        assert doc["customer_id"] == "C7" and doc["data"]["note"] == "second"
        assert doc["tasks"][0]["task_type"] == 2
        assert len(services) == 1


def test_compaction_keeps_everything_and_shrinks_the_file(tmp_path):
    path = tmp_path / "db.json"
    client = make(path, compact_min_bytes=1, compact_ratio=1000.0)
    sids = [client.post("/services/start", json={"customer_id": f"C{i % 3}"}).get_json()
            ["service_id"] for i in range(9)]
    for sid in sids:
        for _ in range(5):
            client.post(f"/services/{sid}/states/start", json={"pad": "x" * 200})
    client.delete(f"/services/{sids[-1]}")
    big = len(path.read_bytes().rstrip())  # the file ends in pre-allocated whitespace
    compacting = make(path, compact_min_bytes=1, compact_ratio=1.5)
    compacting.post(f"/services/{sids[0]}/tasks/start")
    assert len(path.read_bytes().rstrip()) > big  # writes do not compact...
    # ...the housekeeping thread of a server process does, every few seconds
    assert compacting.application.extensions["contextsvc.sweeper"].reclaim(
        compacting.application.extensions["contextsvc.stores"].get())
    assert len(path.read_bytes().rstrip()) < big / 3
    for client in (compacting, make(path)):
        customers = [client.get(f"/customers/C{i}/services").get_json() for i in range(3)]
        assert sorted(s["service_id"] for c in customers for s in c) == sids[:-1]
        assert len(client.get(f"/services/{sids[1]}/states").get_json()) == 5
    assert make(path).post("/services/start", json={"contact_key": "k"}
                           ).get_json()["service_id"] == sids[-1] + 1
    with TinyDB(path, access_mode="r") as db:
        assert len(db.table("services")) == 9  # eight kept, one new


def test_a_torn_last_write_is_cut_and_the_rest_kept(tmp_path):
    path = tmp_path / "db.json"
    client = make(path)
    sid = client.post("/services/start", json={"customer_id": "C1"}).get_json()["service_id"]
    trailer = path.read_bytes().rindex(b"\n}}\n") + 1
    with open(path, "r+b") as handle:  # a writer killed mid-write: trailer gone, half a record
        handle.seek(trailer)
        handle.write(b',"2": {"service_id": 2, "custo')
    again = make(path)
    assert again.get(f"/services/{sid}").status_code == 200
    assert again.get("/services/2").status_code == 404
    json.loads(path.read_text())  # repaired on open: plain JSON again
    assert again.post("/services/start", json={"contact_key": "k"}).get_json() == {
        "service_id": 2}


def test_damage_before_good_records_refuses_to_start(tmp_path):
    path = tmp_path / "db.json"
    client = make(path)
    for _ in range(3):
        client.post("/services/start", json={"contact_key": "k"})
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][:20]  # the second record is damaged; the third is fine
    path.write_bytes(b"\n".join(lines))
    before = path.read_bytes()
    with pytest.raises(StoreCorrupt, match=str(path)):
        make(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [b"garbage", b'{"services": [1, 2]}', b'{"a": {"1": {}}}'])
def test_an_unreadable_file_refuses_to_start(tmp_path, content):
    path = tmp_path / "db.json"
    path.write_bytes(content)
    with pytest.raises(StoreCorrupt, match=str(path)):
        make(path)
    assert path.read_bytes() == content


def test_a_plain_tinydb_file_is_imported(tmp_path):
    path = tmp_path / "db.json"
    with TinyDB(path) as db:
        db.table("services").insert({"customer_id": "C1", "started": {
            "timestamp": "2009-05-07T12:05:20.157Z"}, "data": {"a": 1}, "states": [],
            "tasks": []})
    client = make(path)
    assert client.get("/customers/C1/services").get_json()[0]["a"] == 1
    assert client.post("/services/start", json={"contact_key": "k"}).get_json() == {
        "service_id": 2}
    assert (tmp_path / "db.json.tinydb-import.bak").exists()


def test_memory_engine_writes_no_file(tmp_path):
    path = tmp_path / "db.json"
    client = make(path, engine="memory")
    assert client.post("/services/start", json={"contact_key": "k"}).status_code == 201
    assert not path.exists()


def test_config_file_and_environment(tmp_path, monkeypatch):
    ini = tmp_path / "contextsvc.ini"
    ini.write_text(f"[storage]\npath = {tmp_path / 'ini.json'}\n[limits]\nmax_depth = 4\n")
    monkeypatch.setenv("CONTEXTSVC_CONFIG", str(ini))
    monkeypatch.setenv("CONTEXTSVC_LIMITS_MAX_BODY_BYTES", "2048")
    app = create_app()
    assert app.config["CONTEXTSVC"]["storage"]["path"] == str(tmp_path / "ini.json")
    assert app.config["CONTEXTSVC"]["limits"]["max_depth"] == 4
    client = app.test_client()
    assert client.post("/services/start", json={"contact_key": "k", "p": "x" * 3000}
                       ).status_code == 413
    assert client.post("/services/start", json={"contact_key": "k"}).status_code == 201
    assert (tmp_path / "ini.json").exists()


def test_example_config_documents_every_key_with_its_default(tmp_path, monkeypatch):
    from contextsvc import config

    example = os.path.join(os.path.dirname(__file__), "..", "config.example.ini")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONTEXTSVC_CONFIG", example)
    assert config.load() == config.load(environ={})
    text = open(example).read()
    for section, keys in config.SCHEMA.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"\n{key} =" in text


@pytest.mark.parametrize("ini", ["[storage]\nfsync = maybe\n", "[nope]\nx = 1\n",
                                 "[limits]\nmax_depth = -1\n", "[storage]\nengine = redis\n",
                                 "[limits]\nunknown = 1\n"])
def test_bad_config_is_refused_with_a_message(tmp_path, monkeypatch, ini):
    path = tmp_path / "bad.ini"
    path.write_text(ini)
    monkeypatch.setenv("CONTEXTSVC_CONFIG", str(path))
    with pytest.raises(ConfigError):
        create_app()


def test_default_database_is_under_a_local_data_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONTEXTSVC_CONFIG", raising=False)
    client = create_app().test_client()
    assert client.post("/services/start", json={"contact_key": "k"}).status_code == 201
    assert (tmp_path / "data" / "contextsvc.json").exists()
