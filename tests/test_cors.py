"""Browsers (API.md 8.3): CORS headers for the origins of [http] cors_origins, and
for no other; preflights answered 204 without a key."""

from __future__ import annotations

import pytest

from contextsvc import create_app
from contextsvc.config import ConfigError, load
from contextsvc.domain import access

PREFIX = "/genesys/1/cs"
ORIGINS = "https://desk.example.com, http://localhost:3000"
KEY = "wr1teK3y-Pa9sDf8gHj7kLz6xCv5bNm4qWe3rTy2uIo"
HEADERS = ("Authorization", "Content-Type", "ContactCenterId", "GroupId", "Idempotency-Key",
           "If-Match")


def app_with(origins=ORIGINS, keys=True):
    settings = {"storage": {"engine": "memory"}, "http": {"cors_origins": origins}}
    if keys:
        settings["api_keys"] = {"ivr": f"write {access.digest(KEY).hex()}"}
    return create_app(settings)


@pytest.fixture
def client():
    return app_with().test_client()


def cors_headers(response):
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control")}


def preflight(client, origin, method="POST", path="/services/start", headers=HEADERS):
    return client.options(PREFIX + path, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": ", ".join(h.lower() for h in headers)})


@pytest.mark.parametrize("origin", ["https://desk.example.com", "http://localhost:3000",
                                    "HTTPS://DESK.EXAMPLE.COM"])
def test_a_preflight_from_an_allowed_origin_is_204_with_methods_and_headers(client, origin):
    """No key needed: browsers send none on a preflight."""
    r = preflight(client, origin)
    assert r.status_code == 204 and r.get_data() == b"" and "Content-Type" not in r.headers
    assert r.headers["Access-Control-Allow-Origin"] == origin
    methods = {m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PUT", "DELETE"} <= methods
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {h.lower() for h in HEADERS}
    assert "Access-Control-Allow-Credentials" not in r.headers
    assert "Origin" in r.headers["Vary"]


@pytest.mark.parametrize("method, path", [("GET", "/services/1"), ("DELETE", "/services/1"),
                                          ("PUT", "/services/1/extensions/coupon"),
                                          ("POST", "/maintenance/purge")])
def test_every_method_of_the_api_can_be_preflighted(client, method, path):
    r = preflight(client, "https://desk.example.com", method, path, ("Authorization",))
    assert r.status_code == 204
    assert method in r.headers["Access-Control-Allow-Methods"]
    assert r.headers["Access-Control-Allow-Headers"].lower() == "authorization"


def test_a_header_outside_the_list_is_not_allowed(client):
    r = preflight(client, "https://desk.example.com", headers=("Authorization", "X-Secret"))
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"authorization"}


def test_answers_to_an_allowed_origin_expose_location_and_etag(client):
    origin = "https://desk.example.com"
    r = client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                    headers={"Origin": origin, "Authorization": f"Bearer {KEY}"})
    assert r.status_code == 201 and r.headers["Location"]
    assert r.headers["Access-Control-Allow-Origin"] == origin
    exposed = {h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed == {"Location", "ETag"}
    # errors too, so that a page can tell a missing key from a failure
    r = client.get(f"{PREFIX}/services/1", headers={"Origin": origin})
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == origin
    r = client.get(f"{PREFIX}/nowhere", headers={"Origin": origin})
    assert r.status_code == 404 and r.headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize("origin", ["https://evil.example.com", "https://desk.example.com.evil.net",
                                    "http://desk.example.com", "https://desk.example.com:8443",
                                    "null", None])
def test_other_origins_get_no_cors_headers(client, origin):
    headers = {"Origin": origin} if origin else {}
    r = preflight(client, origin) if origin else client.options(f"{PREFIX}/services/start")
    assert cors_headers(r) == {}
    r = client.post(f"{PREFIX}/services/start", json={"contact_key": "K"},
                    headers={**headers, "Authorization": f"Bearer {KEY}"})
    assert r.status_code == 201 and cors_headers(r) == {}
    assert "Origin" in r.headers["Vary"]  # a cache keeps answers to each origin apart


def test_no_origin_is_allowed_by_default():
    client = create_app({"storage": {"engine": "memory"}}).test_client()
    r = preflight(client, "https://desk.example.com")
    assert cors_headers(r) == {}
    r = client.get(f"{PREFIX}/services/anonymous/K", headers={"Origin": "https://desk.example.com"})
    assert r.status_code == 200 and cors_headers(r) == {}


def test_an_options_request_that_is_no_preflight_is_unchanged(client):
    r = client.options(f"{PREFIX}/services/1")
    assert r.status_code == 200 and r.get_data() == b""
    assert set(r.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "PUT", "DELETE"}


def test_origins_from_the_environment():
    settings = load(environ={"CONTEXTSVC_HTTP_CORS_ORIGINS": "https://a.example, http://[::1]:8080"})
    assert settings["http"]["cors_origins"] == ("https://a.example", "http://[::1]:8080")
    client = app_with(settings["http"]["cors_origins"]).test_client()
    assert preflight(client, "http://[::1]:8080").headers[
        "Access-Control-Allow-Origin"] == "http://[::1]:8080"
    # brackets are matched as they are, not as a regular expression
    assert cors_headers(preflight(client, "http://:8080")) == {}
    assert cors_headers(preflight(client, "http://1:8080")) == {}


@pytest.mark.parametrize("value", ["*", "desk.example.com", "https://desk.example.com/",
                                   "https://desk.example.com/app", "ftp://desk.example.com",
                                   "https://.*\\.example\\.com"])
def test_a_value_that_is_not_an_origin_is_refused(value):
    with pytest.raises(ConfigError, match=r"^\[http\] cors_origins: "):
        load({"http": {"cors_origins": f"https://ok.example, {value}"}}, environ={})
