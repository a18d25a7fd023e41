"""``contextsvc keys new``, as installed: it prints a fresh key and the line that
configures it, and that line makes the key work with its role."""

from __future__ import annotations

import re

import pytest

from contextsvc import create_app
from contextsvc.domain import access
from tests.test_cli import run

PREFIX = "/genesys/1/cs"
PURGE = {"limit": "2000-01-01T00:00:00Z", "operation": "purge.service.all"}


def new_key(*args: str, env=None) -> tuple[str, str]:
    result = run("keys", "new", *args, env=env)
    assert result.returncode == 0, result.stderr
    key = re.search(r"^    ([A-Za-z0-9_-]{43})$", result.stdout, re.M).group(1)
    line = re.search(r"^    (\S+ = .+)$", result.stdout, re.M).group(1)
    assert "Authorization: Bearer" in result.stdout
    return key, line


def test_keys_new_prints_a_key_and_the_line_that_makes_it_work(tmp_path, monkeypatch):
    env = {"CONTEXTSVC_CONFIG": ""}
    key, line = new_key("ivr", "--role", "write", env=env)
    assert line == f"ivr = write {access.digest(key).hex()}"
    assert key not in line
    other, _ = new_key("ivr", "--role", "write", env=env)
    assert other != key  # fresh each time

    ini = tmp_path / "contextsvc.ini"
    ini.write_text(f"[api_keys]\n{line}\n")
    monkeypatch.setenv("CONTEXTSVC_CONFIG", str(ini))
    client = create_app({"storage": {"engine": "memory"}}).test_client()
    auth = {"Authorization": f"Bearer {key}"}
    assert client.post(f"{PREFIX}/services/start", json={"contact_key": "K"}).status_code == 401
    assert client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                       headers=auth).status_code == 201
    assert client.get(f"{PREFIX}/services/1", headers=auth).status_code == 200
    assert client.post(f"{PREFIX}/maintenance/purge", json=PURGE, headers=auth
                       ).status_code == 403
    assert ini.read_text().count(key) == 0


@pytest.mark.file_engine("tenants given as data files")
def test_keys_new_with_tenants_and_each_role(tmp_path, monkeypatch):
    ini = tmp_path / "contextsvc.ini"
    tenants = (f"[tenants]\nacme = {tmp_path / 'acme.json'}\nglobex = {tmp_path / 'globex.json'}"
               f"\nglobex.id = 7\ninitech = {tmp_path / 'initech.json'}\ndefault = acme\n")
    ini.write_text(tenants)
    env = {"CONTEXTSVC_CONFIG": str(ini)}
    keys = {role: new_key(f"k-{role}", "--role", role, env=env)
            for role in ("read", "write", "admin")}
    key, line = new_key("acme-ivr", "--role", "write", "--tenant", "acme", "--tenant", "7",
                        env=env)
    assert line.endswith(" acme,7")
    ini.write_text(tenants + "[api_keys]\n" + "\n".join([line, *(v[1] for v in keys.values())])
                   + "\n")
    monkeypatch.setenv("CONTEXTSVC_CONFIG", str(ini))
    app = create_app({"storage": {"engine": "memory"}})
    assert app.config["CONTEXTSVC"]["api_keys"]["acme-ivr"].tenants == ("acme", "globex")
    client = app.test_client()
    auth = {"Authorization": f"Bearer {key}"}
    for tenant, status in (("acme", 201), ("globex", 201), ("7", 201), ("initech", 403)):
        r = client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                        headers={**auth, "ContactCenterId": tenant})
        assert r.status_code == status, r.get_json()
    for role, (k, _) in keys.items():
        r = client.post(f"{PREFIX}/maintenance/purge", json=PURGE,
                        headers={"Authorization": f"Bearer {k}", "ContactCenterId": "initech"})
        assert r.status_code == (200 if role == "admin" else 403)

    # a tenant the configuration does not have: the line would stop the server
    result = run("keys", "new", "x", "--role", "read", "--tenant", "initrode", env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert "--tenant: names the tenant 'initrode', which is not configured" in result.stderr

    # the command says when the configuration names the key already
    result = run("keys", "new", "acme-ivr", "--role", "write", env={"CONTEXTSVC_CONFIG": str(ini)})
    assert result.returncode == 0 and "has a key 'acme-ivr' already" in result.stderr


def test_keys_new_refuses_bad_names_roles_and_tenants():
    for args, code, says in [
        (("bad name", "--role", "read"), 1, "bad name: a name is"),
        (("ivr", "--role", "boss"), 2, "'boss' is not one of"),
        (("ivr",), 2, "Missing option '--role'"),
        (("ivr", "--role", "read", "--tenant", "a,b"), 1, "--tenant 'a,b'"),
    ]:
        result = run("keys", "new", *args, env={"CONTEXTSVC_CONFIG": ""})
        assert result.returncode == code and says in result.stderr, result.stderr
        assert result.stdout == ""


def test_a_broken_key_line_is_a_one_line_failure(tmp_path):
    ini = tmp_path / "contextsvc.ini"
    ini.write_text("[api_keys]\nivr = write abc\n")
    result = run("keys", "new", "x", "--role", "read", env={"CONTEXTSVC_CONFIG": str(ini)})
    assert result.returncode == 1
    assert result.stderr.startswith("contextsvc: error: configuration: ")
    assert "[api_keys] ivr: the second part must be the SHA-256" in result.stderr
    assert len(result.stderr.splitlines()) == 1
