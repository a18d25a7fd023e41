"""Tenants (API.md 8.2): one store per tenant, named by ContactCenterId; the
reference product's errors word for word; isolation of every read route, the
export stream and the command; the configuration of [tenants]."""

from __future__ import annotations

import json
import re

import pytest

from contextsvc import create_app
from contextsvc.config import ConfigError, load
from contextsvc.domain import tenancy
from contextsvc.storage import tinydb_snapshot
from tests.test_cli import run
from tests.test_lifecycle import Clock

PREFIX = "/genesys/1/cs"
NO_TENANT = ("Invalid tenant specified : no tenant specified in multi-tenant environment. "
             "Verify configuration and 'ContactCenterId' HTTP header.")
FULL = {"active_states": "true", "completed_states": "true", "active_tasks": "true",
        "completed_tasks": "true"}


def unknown(value: str) -> str:
    return (f"Invalid tenant specified : specified tenant in HTTP header 'ContactCenterId'="
            f"'{value}' not configured. Verify configuration.")


def tenants(tmp_path, default: str | None = "acme", **more) -> dict[str, str]:
    lines = {"acme": str(tmp_path / "acme.json"), "globex": str(tmp_path / "globex.json"),
             "globex.id": "7", **more}
    if default:
        lines["default"] = default
    return lines


def make(tmp_path, engine="file", default: str | None = "acme", **sections):
    return create_app({"storage": {"engine": engine, "path": str(tmp_path / "db.json")},
                       "tenants": tenants(tmp_path, default), **sections})


@pytest.fixture(params=["file", "memory"])
def app(request, tmp_path):
    return make(tmp_path, request.param)


@pytest.fixture
def client(app):
    return app.test_client()


def at(tenant: str) -> dict[str, str]:
    return {"ContactCenterId": tenant}


# ------------------------------------------------------------------ naming the tenant
def test_each_tenant_has_its_own_services_and_ids(client):
    a = client.post(f"{PREFIX}/services/start", json={"contact_key": "K"}, headers=at("acme"))
    g = client.post(f"{PREFIX}/services/start", json={"contact_key": "K"}, headers=at("globex"))
    assert a.status_code == g.status_code == 201
    assert a.get_json()["service_id"] == g.get_json()["service_id"] == 1  # ids per tenant
    client.put(f"{PREFIX}/services/1/extensions/who", json="globex", headers=at("globex"))
    assert "who" not in client.get(f"{PREFIX}/services/1", headers=at("acme")).get_json()
    assert client.get(f"{PREFIX}/services/1", headers=at("globex")).get_json()["who"] == "globex"


def test_a_tenant_is_named_by_its_name_or_its_number_in_a_header_of_any_case(client):
    client.post(f"{PREFIX}/services/start", json={"contact_key": "K", "who": "globex"},
                headers=at("globex"))
    for headers in (at("7"), {"contactcenterid": "globex"}, {"CONTACTCENTERID": " 7 "}):
        r = client.get(f"{PREFIX}/services/1", headers=headers)
        assert r.status_code == 200 and r.get_json()["who"] == "globex", headers


def test_without_the_header_the_default_tenant(client):
    client.post(f"{PREFIX}/services/start", json={"contact_key": "K", "who": "acme"},
                headers=at("acme"))
    assert client.get(f"{PREFIX}/services/1").get_json()["who"] == "acme"
    assert client.get("/services/1").get_json()["who"] == "acme"  # under both prefixes


def test_without_a_default_a_request_naming_no_tenant_is_refused_word_for_word(tmp_path):
    client = make(tmp_path, default=None).test_client()
    for headers in ({}, at(""), at("   ")):
        r = client.post(f"{PREFIX}/services/start", json={"contact_key": "K"}, headers=headers)
        assert r.status_code == 400
        assert r.get_json() == {"message": NO_TENANT, "exception": "InvalidTenantException"}
    for tenant in ("acme", "globex"):
        assert client.get(f"{PREFIX}/customers/C/services", headers=at(tenant)).get_json() == []


@pytest.mark.parametrize("value", ["initech", "ACME", "../acme", "../x", "/tmp/acme.json",
                                   "acme.json", "0", "8", "07x", "acme,globex",
                                   "caf\u00e9", "x" * 200])
def test_an_unknown_tenant_is_refused_word_for_word_and_changes_nothing(client, value):
    r = client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                    headers={"ContactCenterId": value.encode().decode("latin-1")})
    assert r.status_code == 400, r.get_json()
    body = r.get_json()
    assert body["exception"] == "InvalidTenantException"
    assert body["message"] == unknown(value.encode().decode("latin-1"))
    for tenant in ("acme", "globex"):
        assert client.get(f"{PREFIX}/services/anonymous/K", headers=at(tenant)).get_json() == []


def test_a_huge_tenant_value_is_refused_with_a_short_message(client):
    r = client.get(f"{PREFIX}/services/1", headers=at("a" * 6000))
    assert r.status_code == 400 and r.get_json()["exception"] == "InvalidTenantException"
    assert len(r.get_json()["message"]) < 400


def test_a_single_tenant_service_ignores_contact_center_id(tmp_path):
    client = create_app({"storage": {"path": str(tmp_path / "db.json")}}).test_client()
    for tenant in ("acme", "../x", "whatever"):
        r = client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                        headers=at(tenant))
        assert r.status_code == 201
    assert len(client.get(f"{PREFIX}/services/anonymous/K").get_json()) == 3


def test_group_id_is_accepted_checked_for_length_and_ignored(client):
    ok = client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                     headers={**at("globex"), "GroupId": "g" * 256})
    assert ok.status_code == 201
    long = client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                       headers={**at("globex"), "GroupId": "g" * 257})
    assert long.status_code == 400 and "GroupId" in long.get_json()["message"]
    assert len(client.get(f"{PREFIX}/services/anonymous/K", headers=at("globex")).get_json()) == 1


def test_idempotency_keys_are_per_tenant(client):
    headers = {"Idempotency-Key": "call-1"}
    a = client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                    headers={**headers, **at("acme")})
    again = client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                        headers={**headers, **at("acme")})
    g = client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                    headers={**headers, **at("globex")})
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in g.headers and g.status_code == 201
    for tenant in ("acme", "globex"):
        assert len(client.get(f"{PREFIX}/services/anonymous/K", headers=at(tenant)).get_json()
                   ) == 1
    assert a.get_json() == again.get_json()


# ------------------------------------------------------------------ isolation
def fill(client, tenant: str) -> None:
    """Services of the same customer, contact key and ids in each tenant, each piece
    of data marked with its tenant's name."""
    h = at(tenant)
    for n in range(3):
        body = {"customer_id": "C", "contact_key": "K", "service_type": 1, "mark": tenant}
        if n == 2:
            body.pop("customer_id")
        sid = client.post(f"{PREFIX}/services/start", json=body, headers=h).get_json()[
            "service_id"]
        client.post(f"{PREFIX}/services/{sid}/states/start",
                    json={"state_type": 1, "mark": tenant}, headers=h)
        client.post(f"{PREFIX}/services/{sid}/tasks/start",
                    json={"task_type": 1, "mark": tenant}, headers=h)
        client.put(f"{PREFIX}/services/{sid}/extensions/mark", json={"mark": tenant}, headers=h)
    client.post(f"{PREFIX}/services/1/end", json={"mark": tenant}, headers=h)


def read_urls(document) -> list[str]:
    """A URL for every GET operation of the document, on the ids, customer id and
    contact key both tenants have."""
    values = {"sid": 2, "stid": 1, "tid": 1, "customer_id": "C", "contact_key": "K",
              "key": "mark", "time_from": "2000-01-01T00:00:00Z", "export_content": "true"}
    urls = []
    for path, ops in document["paths"].items():
        if "get" not in ops or path in ("/health",):
            continue
        url = PREFIX + re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path)
        query = [p["name"] for p in ops["get"].get("parameters", []) if p.get("in") == "query"]
        params = {name: values.get(name, FULL.get(name)) for name in query
                  if name in values or name in FULL}
        urls.append((url, params))
    return urls


def test_every_read_route_of_a_tenant_returns_only_its_data(client):
    fill(client, "acme")
    fill(client, "globex")
    document = client.get(f"{PREFIX}/openapi.json").get_json()
    urls = read_urls(document)
    assert len(urls) >= 15
    for url, params in urls:
        for tenant, other in (("acme", "globex"), ("globex", "acme")):
            r = client.get(url, query_string=params, headers=at(tenant))
            assert r.status_code == 200, (url, r.get_json())
            text = r.get_data(as_text=True)
            assert other not in text, (tenant, url)
            if url.endswith(("/services/2", "/services", "/states", "/tasks", "/stream",
                             "/mark")):
                assert tenant in text, (tenant, url)


@pytest.mark.parametrize("accept", ["application/json", "application/x-ndjson"])
def test_the_export_stream_of_a_tenant_holds_only_its_services(client, accept):
    fill(client, "acme")
    fill(client, "globex")
    client.post(f"{PREFIX}/services/start",
                json={"contact_key": "only-globex", "mark": {"mark": "globex"}},
                headers=at("globex"))
    for tenant, count in (("acme", 3), ("globex", 4)):
        r = client.get(f"{PREFIX}/maintenance/services/stream",
                       query_string={"time_from": "2000-01-01T00:00:00Z",
                                     "export_content": "true"},
                       headers={"Accept": accept, **at(tenant)})
        assert r.status_code == 200
        text = r.get_data(as_text=True)
        services = (json.loads(text) if accept == "application/json"
                    else [json.loads(line) for line in text.splitlines()])
        assert len(services) == count
        other = "acme" if tenant == "globex" else "globex"
        assert all(tenant in json.dumps(s) and other not in json.dumps(s) for s in services)


def test_purge_in_a_tenant_leaves_the_other_whole(client):
    fill(client, "acme")
    fill(client, "globex")
    r = client.post(f"{PREFIX}/maintenance/purge", headers=at("acme"),
                    json={"limit": "2999-01-01T00:00:00Z", "operation": "purge.service.all"})
    assert r.status_code == 200
    assert client.get(f"{PREFIX}/customers/C/services", headers=at("acme")).get_json() == []
    assert len(client.get(f"{PREFIX}/customers/C/services", headers=at("globex")).get_json()
               ) == 2


def test_each_tenant_has_its_own_data_file(tmp_path):
    client = make(tmp_path).test_client()
    fill(client, "globex")
    with tinydb_snapshot(tmp_path / "globex.json") as db:
        assert len(db.table("services")) == 3
    with tinydb_snapshot(tmp_path / "acme.json") as db:
        assert len(db.table("services")) == 0
    assert not (tmp_path / "db.json").exists()  # [storage] path is not used with tenants


@pytest.mark.file_engine("tenants given as data files")
def test_housekeeping_keeps_every_tenant(tmp_path):
    clock = Clock()
    app = create_app({"storage": {"path": str(tmp_path / "db.json")},
                      "tenants": tenants(tmp_path), "lifecycle": {"expiration": "1h"}},
                     clock=clock)
    client = app.test_client()
    for tenant in ("acme", "globex"):
        for _ in range(3):
            client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                        headers=at(tenant))
    clock.advance(hours=2)
    sweeper = app.extensions["contextsvc.sweeper"]
    stores = sweeper.stores()
    assert len(stores) == 2
    for store in stores:
        sweeper.keep(store)
    for tenant in ("acme", "globex"):
        with tinydb_snapshot(tmp_path / f"{tenant}.json") as db:
            assert len(db.table("services")) == 0, tenant


def test_health_names_the_tenant_whose_store_fails(tmp_path):
    client = make(tmp_path).test_client()
    assert client.get("/health").status_code == 200
    (tmp_path / "globex.json").unlink()
    r = client.get("/health")
    assert r.status_code == 503
    assert r.get_json()["message"].startswith("the store of the tenant globex: ")
    assert client.get(f"{PREFIX}/services/anonymous/K", headers=at("acme")).status_code == 200


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize("lines, says", [
    ({"acme": "{d}/acme.json", "default": "globex"}, "[tenants] default: names no tenant"),
    ({"acme": "{d}/acme.json", "acme.id": "x"}, "[tenants] acme.id: expected a positive number"),
    ({"acme": "{d}/acme.json", "acme.id": "0"}, "[tenants] acme.id: expected a positive"),
    ({"acme": "{d}/a.json", "globex": "{d}/g.json", "acme.id": "3", "globex.id": "3"},
     "[tenants] globex.id: 3 is already the number of acme"),
    ({"acme": "{d}/a.json", "3": "{d}/g.json", "acme.id": "3"},
     "[tenants] 3: the name is the number of acme"),
    ({"globex.id": "3"}, "[tenants] globex.id: there is no tenant 'globex'"),
    ({"acme.name": "x"}, "[tenants] acme.name: expected <name>, <name>.id or default"),
    ({"../x": "{d}/x.json"}, "[tenants] ../x: a tenant's name is"),
    ({"acme": ""}, "[tenants] acme: the tenant's store is missing"),
    ({"default": "acme"}, "[tenants] default: names no tenant"),
    ({"acme": "{d}/missing/acme.json"}, "[tenants] acme: the directory {d}/missing does not"),
    ({"acme": "{d}"}, "[tenants] acme: {d} is a directory"),
    ({"acme": "{d}/a.json", "globex": "{d}/./a.json"},
     "[tenants] globex: {d}/a.json is the data file of acme too"),
])
def test_a_bad_tenants_section_is_refused_naming_the_key(tmp_path, lines, says):
    d = str(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load({"tenants": {k: v.format(d=d) for k, v in lines.items()}}, environ={})
    assert str(caught.value).startswith(says.format(d=d)), str(caught.value)


def test_two_tenants_may_not_share_a_file_through_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError, match="is the data file of acme too"):
        load({"tenants": {"acme": str(tmp_path / "real" / "a.json"),
                          "globex": str(tmp_path / "link" / "a.json")}}, environ={})


def test_tenant_paths_are_taken_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load({"tenants": {"acme": "acme.json"}}, environ={})
    assert settings["tenants"].by_name["acme"].store == str(tmp_path / "acme.json")


@pytest.mark.file_engine("tenants given as data files")
def test_the_tenants_section_from_the_file(tmp_path, monkeypatch):
    ini = tmp_path / "contextsvc.ini"
    ini.write_text(f"[tenants]\nAcme = {tmp_path / 'acme.json'}\nAcme.id = 12\n"
                   "default = Acme\n")
    monkeypatch.setenv("CONTEXTSVC_CONFIG", str(ini))
    client = create_app().test_client()
    assert client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                       headers=at("12")).status_code == 201
    assert client.get(f"{PREFIX}/services/1", headers=at("Acme")).status_code == 200
    assert client.get(f"{PREFIX}/services/1", headers=at("acme")).status_code == 400


def test_the_messages_are_the_reference_products():
    assert tenancy.NO_TENANT == NO_TENANT
    assert tenancy.unknown_tenant("x") == unknown("x")


# ------------------------------------------------------------------ the command
def command_env(tmp_path, default="acme") -> dict[str, str]:
    ini = tmp_path / "contextsvc.ini"
    lines = [f"{k} = {v}" for k, v in tenants(tmp_path, default).items()]
    ini.write_text("[tenants]\n" + "\n".join(lines) + "\n")
    return {"CONTEXTSVC_CONFIG": str(ini), "CONTEXTSVC_STORAGE_PATH": str(tmp_path / "db.json")}


def test_every_command_takes_tenant():
    import click

    from contextsvc.cli import main

    commands = [c for c in main.commands.values() if not isinstance(c, click.Group)]
    assert len(commands) >= 8
    for command in commands:
        assert "--tenant" in [o for p in command.params for o in getattr(p, "opts", [])], \
            command.name


@pytest.mark.file_engine("tenants given as data files")
def test_the_command_works_on_the_tenant_it_names(tmp_path):
    env = command_env(tmp_path)
    client = make(tmp_path).test_client()
    fill(client, "acme")
    fill(client, "globex")
    exported = {}
    for tenant in ("acme", "globex", "7", None):
        args = ["export"] + (["--tenant", tenant] if tenant else [])
        result = run(*args, env=env)
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        exported[tenant] = lines
    assert exported["7"] == exported["globex"] and exported[None] == exported["acme"]
    for tenant, other in (("acme", "globex"), ("globex", "acme")):
        assert len(exported[tenant]) == 3
        assert all(tenant in json.dumps(s) and other not in json.dumps(s)
                   for s in exported[tenant])

    # import into globex what acme has: ids kept, globex's own replaced
    dump = tmp_path / "acme.ndjson"
    dump.write_text(run("export", "--tenant", "acme", env=env).stdout)
    result = run("import", "--tenant", "globex", "--on-conflict", "replace", str(dump), env=env)
    assert result.returncode == 0, result.stderr
    after = make(tmp_path).test_client()
    assert after.get(f"{PREFIX}/services/2", headers=at("globex")).get_json()["mark"] == {
        "mark": "acme"}

    check = run("check", "--tenant", "globex", env=env)
    assert check.returncode == 0 and f"store: {tmp_path / 'globex.json'}" in check.stdout
    purge = run("purge", "--tenant", "acme", "--limit", "2999-01-01T00:00:00Z",
                "--operation", "purge.service.all", env=env)
    assert purge.returncode == 0, purge.stderr
    after = make(tmp_path).test_client()
    assert after.get(f"{PREFIX}/customers/C/services", headers=at("acme")).get_json() == []
    assert len(after.get(f"{PREFIX}/customers/C/services", headers=at("globex")).get_json()) == 2


@pytest.mark.file_engine("tenants given as data files")
def test_the_command_refuses_a_tenant_it_cannot_use(tmp_path):
    env = command_env(tmp_path)
    result = run("export", "--tenant", "initech", env=env)
    assert result.returncode == 2 and "no tenant 'initech' in [tenants]" in result.stderr
    result = run("export", "--tenant", "../acme", env=env)
    assert result.returncode == 2 and "no tenant '../acme'" in result.stderr
    result = run("check", env=command_env(tmp_path, default=None))
    assert result.returncode == 2
    assert "has tenants (acme, globex) and no default: name one with --tenant" in result.stderr
    single = {"CONTEXTSVC_CONFIG": "", "CONTEXTSVC_STORAGE_PATH": str(tmp_path / "db.json")}
    result = run("export", "--tenant", "acme", env=single)
    assert result.returncode == 2 and "no tenants" in result.stderr


def test_the_log_line_names_the_tenant(client, capsys):
    client.post(f"{PREFIX}/services/start", json={"contact_key": "K"}, headers=at("7"))
    client.get(f"{PREFIX}/services/1", headers=at("nowhere"))
    lines = [line.split("] [INFO] ", 1)[1] for line in capsys.readouterr().out.splitlines()
             if "[INFO]" in line]
    assert re.fullmatch(r"POST /genesys/1/cs/services/start 201 \d+\.\dms tenant=globex",
                        lines[-2])
    assert re.fullmatch(r"GET /genesys/1/cs/services/1 400 \d+\.\dms", lines[-1])
