"""API keys and roles (API.md 8.1), through the test client: every operation of the
OpenAPI document against every role, with no key, a wrong one and one of another
tenant; malformed headers; the configuration of keys."""

from __future__ import annotations

import re

import pytest

from contextsvc import create_app
from contextsvc.config import ConfigError, load
from contextsvc.domain import access

PREFIX = "/genesys/1/cs"
# name -> (role, key)
KEYS = {
    "reports": ("read", "r3adK3y-Zq1mX8vT2pLw9sYb4nHc7dJf0gKe5uAo6iR"),
    "ivr": ("write", "wr1teK3y-Pa9sDf8gHj7kLz6xCv5bNm4qWe3rTy2uIo"),
    "ops": ("admin", "adm1nK3y-Mn8bVc7xZa6sDf5gHj4kLq3wEr2tYu1iOp"),
}
ADMIN = {"Authorization": f"Bearer {KEYS['ops'][1]}"}
WRITER = {"Authorization": f"Bearer {KEYS['ivr'][1]}"}
READER = {"Authorization": f"Bearer {KEYS['reports'][1]}"}
WRONG = {"Authorization": "Bearer n0tAK3y-Mn8bVc7xZa6sDf5gHj4kLq3wEr2tYu1iOp"}
# keys of each role for the other tenant, globex
OTHERS = {
    "globex-reports": ("read", "gl0bexR-Zq1mX8vT2pLw9sYb4nHc7dJf0gKe5uAo6iR"),
    "globex-ivr": ("write", "gl0bexW-Pa9sDf8gHj7kLz6xCv5bNm4qWe3rTy2uIo"),
    "globex-ops": ("admin", "gl0bexA-Mn8bVc7xZa6sDf5gHj4kLq3wEr2tYu1iOp"),
}
ACME = {"ContactCenterId": "acme"}
GLOBEX_ADMIN = {"Authorization": f"Bearer {OTHERS['globex-ops'][1]}",
                "ContactCenterId": "globex"}


def key_lines(keys=KEYS, tenant=None):
    return {name: f"{role} {access.digest(key).hex()}" + (f" {tenant}" if tenant else "")
            for name, (role, key) in keys.items()}


def make(tmp_path, engine="memory", **sections):
    """An app with one key of each role for each of two tenants, acme (the default,
    whose keys are KEYS) and globex (OTHERS)."""
    return create_app({"storage": {"engine": engine, "path": str(tmp_path / "db.json")},
                       "tenants": {"acme": str(tmp_path / "acme.json"),
                                   "globex": str(tmp_path / "globex.json"),
                                   "default": "acme"},
                       "api_keys": {**key_lines(KEYS, "acme"), **key_lines(OTHERS, "globex")},
                       **sections})


@pytest.fixture(params=["file", "memory"])
def keyed(request, tmp_path):
    """A client of an app with one key of each role per tenant, on both engines."""
    return make(tmp_path, request.param).test_client()


# ------------------------------------------------------------ every operation x role
def needed_role(method: str, path: str) -> str:
    """The role API.md 8.1 gives an operation, from its method and path alone (not
    from what the operation declares: this is what the declarations are held to)."""
    if path == "/health":
        return "public"
    if path.startswith("/maintenance/"):
        return "admin"
    return "read" if method == "GET" else "write"


ALLOWED = {"public": {"reports", "ivr", "ops"}, "read": {"reports", "ivr", "ops"},
           "write": {"ivr", "ops"}, "admin": {"ops"}}

# Bodies for operations whose body is required and has no example in the document.
BODIES = {
    "start_service": {"contact_key": "K"},
    "set_expiration": {"ttl": 3600},
    "transition": lambda ids: {"from": {"state_id": ids["stid"]}, "to": {"state_type": 9}},
    "purge": {"limit": "2000-01-01T00:00:00Z", "operation": "purge.service.all"},
}


# Values of required query parameters that have no example in the document.
QUERIES = {"time_from": "2000-01-01T00:00:00Z"}


def fresh(client) -> dict[str, object]:
    """A service of customer C with a state and a task: the path values of one request."""
    r = client.post(f"{PREFIX}/services/start", json={"contact_key": "K", "customer_id": "C"},
                    headers=ADMIN)
    assert r.status_code == 201
    sid = r.get_json()["service_id"]
    stid = client.post(f"{PREFIX}/services/{sid}/states/start", json={},
                       headers=ADMIN).get_json()["state_id"]
    tid = client.post(f"{PREFIX}/services/{sid}/tasks/start", json={},
                      headers=ADMIN).get_json()["task_id"]
    return {"sid": sid, "stid": stid, "tid": tid, "customer_id": "C", "contact_key": "K",
            "key": "coupon"}


def snapshot(client) -> list:
    """Everything stored in both tenants, as clients see it."""
    full = "active_states=true&completed_states=true&active_tasks=true&completed_tasks=true"
    return [client.get(f"{PREFIX}{path}?{full}", headers=headers).get_json()
            for path in ("/customers/C/services", "/services/anonymous/K")
            for headers in (ADMIN, GLOBEX_ADMIN)]


def request_of(document, method, path, operation, ids):
    body = None
    if "requestBody" in operation:
        media = operation["requestBody"]["content"]["application/json"]
        body = media.get("example", BODIES.get(operation["operationId"], {}))
        if callable(body):
            body = body(ids)
    url = PREFIX + re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)
    required = [p for p in operation.get("parameters", [])
                if p.get("in") == "query" and p.get("required")]
    if required:
        url += "?" + "&".join(f"{p['name']}={p.get('example', QUERIES.get(p['name']))}"
                              for p in required)
    return method.upper(), url, body


def test_every_operation_of_the_document_needs_the_role_of_its_kind(keyed):
    """Each operation of openapi.json, on the tenant acme: no key and a wrong key are
    401, a key whose role is below the operation's is 403, a key of the other
    tenant is 403 whatever its role, and in each of these cases nothing changes in
    either tenant; a key of acme whose role allows it gets through (2xx)."""
    document = keyed.get(f"{PREFIX}/openapi.json").get_json()
    operations = [(m, p, op) for p, ops in document["paths"].items() for m, op in ops.items()]
    assert len(operations) >= 32
    failures = []
    for method, path, operation in operations:
        role = needed_role(method.upper(), path)
        ids = fresh(keyed)
        before = snapshot(keyed)
        denied = [("no key", {}, 401), ("wrong key", WRONG, 401)]
        denied += [(name, {"Authorization": f"Bearer {key}"}, 403)
                   for name, (_, key) in KEYS.items() if name not in ALLOWED[role]]
        denied += [(name, {"Authorization": f"Bearer {key}", **tenant}, 403)
                   for name, (_, key) in OTHERS.items() for tenant in ({}, ACME)]
        if role == "public":
            denied = []
        for who, headers, status in denied:
            m, url, body = request_of(document, method, path, operation, ids)
            r = keyed.open(url, method=m, json=body, headers=headers)
            if r.status_code != status:
                failures.append((m, path, who, r.status_code, status))
            elif status == 401:
                assert r.headers["WWW-Authenticate"] == "Bearer"
                assert r.get_json()["exception"] == "UnauthorizedException"
            else:
                assert r.get_json()["exception"] == "ForbiddenException"
                if (who in OTHERS and access.allows(OTHERS[who][0], role)
                        and not r.get_json()["message"].endswith("the tenant 'acme'")):
                    failures.append((m, path, who, r.get_json()["message"]))
        if snapshot(keyed) != before:
            failures.append((method, path, "refused requests changed the store"))
        for name in sorted(ALLOWED[role]):
            ids = fresh(keyed)
            m, url, body = request_of(document, method, path, operation, ids)
            r = keyed.open(url, method=m, json=body, headers={
                "Authorization": f"Bearer {KEYS[name][1]}"})
            if not 200 <= r.status_code < 300:  # a new operation may need a body in BODIES
                failures.append((m, path, name, r.status_code, r.get_data(as_text=True)[:200]))
    assert not failures


def test_roles_are_checked_under_both_prefixes(keyed):
    for base in (PREFIX, ""):
        assert keyed.post(f"{base}/services/start", json={"contact_key": "k"}).status_code == 401
        assert keyed.post(f"{base}/services/start", json={"contact_key": "k"},
                          headers=READER).status_code == 403
        assert keyed.post(f"{base}/services/start", json={"contact_key": "k"},
                          headers=WRITER).status_code == 201
        assert keyed.post(f"{base}/maintenance/purge", headers=WRITER, json={
            "limit": "2000-01-01T00:00:00Z", "operation": "purge.service.all"}
        ).status_code == 403


def test_the_docs_page_and_document_need_no_key(keyed):
    for base in (PREFIX, ""):
        assert keyed.get(f"{base}/openapi.json").status_code == 200
        assert keyed.get(f"{base}/docs").status_code == 200
        assert keyed.get(f"{base}/docs/swagger-ui.css").status_code == 200
        assert keyed.get(f"{base}/").status_code == 302


def test_the_key_is_checked_before_the_request_is_read(keyed):
    """A request with no key is refused as such, whatever its body or query."""
    r = keyed.post(f"{PREFIX}/services/start", data=b"{not json",
                   content_type="application/json")
    assert r.status_code == 401
    r = keyed.get(f"{PREFIX}/services/1?active_states=maybe")
    assert r.status_code == 401
    r = keyed.post(f"{PREFIX}/services/start", data=b"x" * (2 << 20),
                   content_type="application/json")
    assert r.status_code == 401
    # with a key, the same requests meet the body and query rules
    r = keyed.post(f"{PREFIX}/services/start", data=b"{not json",
                   content_type="application/json", headers=WRITER)
    assert r.status_code == 400
    r = keyed.get(f"{PREFIX}/services/1?active_states=maybe", headers=READER)
    assert r.status_code == 400


def test_forbidden_names_the_role_never_the_key(keyed):
    r = keyed.delete(f"{PREFIX}/services/1", headers=READER)
    assert r.status_code == 403
    body = r.get_json()
    assert body["exception"] == "ForbiddenException" and "WWW-Authenticate" not in r.headers
    assert "read" in body["message"] and "write" in body["message"]
    assert KEYS["reports"][1] not in r.get_data(as_text=True)


# ------------------------------------------------------------ the Authorization header
WRITE_KEY = KEYS["ivr"][1]


@pytest.mark.parametrize("value", [
    "",
    "Bearer",
    "Bearer ",
    "Basic aXZyOnNlY3JldA==",
    f"Basic {WRITE_KEY}",
    f"Token {WRITE_KEY}",
    WRITE_KEY,  # no scheme
    f"Bearer{WRITE_KEY}",
    f"Bearer {WRITE_KEY[:-1]}",  # a prefix of a real key
    f"Bearer {WRITE_KEY[:8]}",
    f"Bearer {WRITE_KEY}x",
    f"Bearer {WRITE_KEY} {WRITE_KEY}",
    f"Bearer\t{WRITE_KEY}",
    f"Bearer {WRITE_KEY.upper()}",
    f"Bearer {WRITE_KEY}\u00e9",  # non-ASCII
    "Bearer caf\u00e9-\u00fcber",
    "Bearer " + "A" * 100_000,
    f"Bearer {access.digest(WRITE_KEY).hex()}",  # its hash, as configured
], ids=lambda v: repr(v[:40]))
def test_a_malformed_or_unknown_key_is_401_and_changes_nothing(keyed, value):
    before = keyed.get(f"{PREFIX}/services/anonymous/K", headers=ADMIN).get_json()
    r = keyed.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                   headers={"Authorization": value})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    body = r.get_json()
    assert body["exception"] == "UnauthorizedException" and "Bearer" in body["message"]
    assert WRITE_KEY not in r.get_data(as_text=True)
    assert keyed.get(f"{PREFIX}/services/anonymous/K", headers=ADMIN).get_json() == before


def test_two_authorization_headers_are_refused(keyed):
    r = keyed.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                   headers=[("Authorization", f"Bearer {WRITE_KEY}"),
                            ("Authorization", f"Bearer {KEYS['reports'][1]}")])
    assert r.status_code == 401 and "malformed" in r.get_json()["message"]


@pytest.mark.parametrize("value", [
    f"Bearer {WRITE_KEY}",
    f"bearer {WRITE_KEY}",  # RFC 9110 11.1: the scheme is case-insensitive
    f"BEARER {WRITE_KEY}",
    f"Bearer  {WRITE_KEY}",  # RFC 6750 2.1: 1*SP
    f"  Bearer {WRITE_KEY}  ",  # whitespace around a field value is not part of it
])
def test_the_bearer_scheme_in_any_case(keyed, value):
    r = keyed.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                   headers={"Authorization": value})
    assert r.status_code == 201


def test_keys_off_by_default_and_any_header_is_ignored(tmp_path):
    client = create_app({"storage": {"engine": "memory"}}).test_client()
    for headers in ({}, WRONG, {"Authorization": "Basic x"}):
        assert client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                           headers=headers).status_code == 201
        assert client.post(f"{PREFIX}/maintenance/purge", headers=headers, json={
            "limit": "2000-01-01T00:00:00Z", "operation": "purge.service.all"}
        ).status_code == 200


def test_the_log_line_names_the_key_never_its_value(keyed, capsys):
    keyed.post(f"{PREFIX}/services/start", json={"contact_key": "K"}, headers=WRITER)
    keyed.delete(f"{PREFIX}/services/1", headers=READER)
    keyed.get(f"{PREFIX}/services/1", headers=WRONG)
    out = capsys.readouterr().out
    lines = [line.split("] [INFO] ", 1)[1] for line in out.splitlines() if "[INFO]" in line]
    assert re.fullmatch(r"POST /genesys/1/cs/services/start 201 \d+\.\dms key=ivr tenant=acme",
                        lines[-3])
    # (refused by role, before its tenant is resolved)
    assert re.fullmatch(r"DELETE /genesys/1/cs/services/1 403 \d+\.\dms key=reports", lines[-2])
    assert re.fullmatch(r"GET /genesys/1/cs/services/1 401 \d+\.\dms", lines[-1])
    for _, key in KEYS.values():
        assert key not in out and access.digest(key).hex() not in out
    assert WRONG["Authorization"][7:] not in out


# ------------------------------------------------------------ configuration
HASH = access.digest("k").hex()


@pytest.mark.parametrize("name, line, says", [
    ("ivr", f"boss {HASH}", "unknown role 'boss'"),
    ("ivr", f"public {HASH}", "unknown role 'public'"),
    ("ivr", f"write {HASH[:-1]}", "64 hex"),
    ("ivr", f"write {HASH}0", "64 hex"),
    ("ivr", f"write {HASH[:-1]}g", "64 hex"),
    ("ivr", "write", "64 hex"),
    ("ivr", "", "expected '<role>"),
    ("ivr", f"write {HASH} acme,,globex", "tenants"),
    ("", f"write {HASH}", "a key needs a name"),
    ("two words", f"write {HASH}", "a name is"),
])
def test_a_malformed_key_line_is_a_configuration_error_naming_the_key(name, line, says):
    with pytest.raises(ConfigError) as caught:
        load({"api_keys": {name: line}}, environ={})
    message = str(caught.value)
    assert message.startswith(f"[api_keys] {name or '(no name)'}: ") and says in message


def test_a_malformed_key_line_in_the_file_stops_the_app(tmp_path, monkeypatch):
    ini = tmp_path / "contextsvc.ini"
    ini.write_text(f"[api_keys]\nreports = read {HASH}\nivr = writer {HASH[::-1]}\n")
    monkeypatch.setenv("CONTEXTSVC_CONFIG", str(ini))
    with pytest.raises(ConfigError, match=r"\[api_keys\] ivr: unknown role 'writer'"):
        create_app({"storage": {"engine": "memory"}})


def test_one_key_under_two_names_is_refused():
    with pytest.raises(ConfigError, match=r"\[api_keys\] b: the same key as a"):
        load({"api_keys": {"a": f"read {HASH}", "b": f"admin {HASH.upper()}"}}, environ={})


def test_a_key_line_keeps_its_tenants_by_name(tmp_path):
    tenants = {"acme": str(tmp_path / "acme.json"), "globex": str(tmp_path / "globex.json"),
               "globex.id": "7"}
    keys = load({"tenants": tenants,
                 "api_keys": {"all": f"read {HASH}",
                              "some": f"write {access.digest('x').hex()} acme, 7"}},
                environ={})["api_keys"]
    assert keys["all"].tenants is None and keys["all"].role == "read"
    assert keys["some"].tenants == ("acme", "globex") and keys["some"].role == "write"
    assert keys["some"].digest == access.digest("x")


@pytest.mark.parametrize("tenants", [{}, {"acme": "acme.json"}])
def test_a_key_limited_to_a_tenant_that_is_not_configured_is_refused(tmp_path, tenants):
    with pytest.raises(ConfigError, match=r"^\[api_keys\] ivr: names the tenant 'globex', "
                                          r"which is not configured"):
        load({"storage": {"path": str(tmp_path / "db.json")},
              "tenants": {k: str(tmp_path / v) for k, v in tenants.items()},
              "api_keys": {"ivr": f"write {HASH} globex,acme"}}, environ={})


def test_keys_from_the_file_work(tmp_path, monkeypatch):
    ini = tmp_path / "contextsvc.ini"
    ini.write_text("[api_keys]\n" + "\n".join(f"{n} = {v}" for n, v in key_lines().items()))
    monkeypatch.setenv("CONTEXTSVC_CONFIG", str(ini))
    client = create_app({"storage": {"engine": "memory"}}).test_client()
    assert client.post(f"{PREFIX}/services/start", json={"contact_key": "K"}).status_code == 401
    assert client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                       headers=WRITER).status_code == 201
