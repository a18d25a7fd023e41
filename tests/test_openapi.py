"""The OpenAPI document, the offline docs page, and schema-driven fuzzing of every
operation (schemathesis): no 5xx, and responses that conform to the document."""

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from contextsvc import create_app
from tests import pgcluster

SPEC = "/genesys/1/cs/openapi.json"


def test_document_is_valid_openapi_3(client):
    document = client.get(SPEC).get_json()
    validate(document)
    assert document["openapi"].startswith("3.")


def test_document_covers_every_route(app):
    document = app.test_client().get(SPEC).get_json()
    documented = {(method.upper(), path) for path, ops in document["paths"].items()
                  for method in ops}
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/genesys/1/cs/") and not rule.endpoint.startswith(
                ("docs.", "journey.", "static")):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule[len("/genesys/1/cs"):])
            routes |= {(m, path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == routes
    assert len(documented) == len(operations(app))
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def operations(app):
    return [op for bp in app.extensions["contextsvc.api"] for op in bp.operations]


def test_every_url_rule_of_the_api_is_a_declared_operation(app):
    """Under both prefixes, each (method, rule) the API blueprints serve is one
    declared operation, and each declared operation is served."""
    declared = {(op.method, op.rule) for op in operations(app)}
    names = {bp.name for bp in app.extensions["contextsvc.api"]}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0].removesuffix("_root") not in names:
            continue
        path = rule.rule.removeprefix("/genesys/1/cs")
        served |= {(m, path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == declared and len(declared) == len(operations(app))


def test_a_route_can_only_be_added_as_an_operation():
    from contextsvc.api.operations import ApiBlueprint

    bp = ApiBlueprint("extra", __name__)
    for add in (lambda: bp.route("/x")(lambda: None), lambda: bp.get("/x")(lambda: None),
                lambda: bp.add_url_rule("/x", "x", lambda: None)):
        with pytest.raises(TypeError, match="operation"):
            add()


PUBLIC_RULES = {"/health"}  # besides the docs page and openapi.json, not operations


def test_every_operation_declares_its_role(client, app):
    """API.md 8.1: GET outside /maintenance/ is read, any other method there is write,
    everything under /maintenance/ is admin; only the health check is public. The
    document shows the role and, unless public, the bearer scheme."""
    document = client.get(SPEC).get_json()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"]}
    for op in operations(app):
        if op.rule in PUBLIC_RULES:
            assert op.role == "public", op
        elif op.rule.startswith("/maintenance/"):
            assert op.role == "admin", op
        elif op.rule == "/health":  # API.md 7.3: needs no key
            assert op.role == "public", op
        else:
            assert op.role == ("read" if op.method == "GET" else "write"), op
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", op.rule)
        documented = document["paths"][path][op.method.lower()]
        assert documented["x-role"] == op.role
        if op.role == "public":
            assert documented["security"] == [] and "401" not in documented["responses"]
        else:
            assert documented["security"] == [{"bearer": []}]
            assert {"401", "403"} <= set(documented["responses"])


@pytest.mark.parametrize("base", ["/genesys/1/cs", ""])
def test_docs_and_document_under_both_prefixes_and_root_points_to_docs(client, base):
    assert client.get(f"{base}/openapi.json").get_json() == client.get(SPEC).get_json()
    page = client.get(f"{base}/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.headers["Content-Type"].startswith("text/html")
    assert f'url: "{base}/openapi.json"' in page.get_data(as_text=True)
    r = client.get(f"{base}/")
    assert r.status_code == 302 and r.headers["Location"] == f"{base}/docs"


def test_browser_examples_are_integers_javascript_reads_exactly(client):
    """Swagger UI prefills "Try it out" from examples and bounds; past 2^53 a
    browser rounds them (9223372036854775807 became a value the server refused)."""
    document = client.get(SPEC).get_json()
    request_parts = [op.get("requestBody", {}) for ops in document["paths"].values()
                     for op in ops.values()]
    request_parts += [p for ops in document["paths"].values() for op in ops.values()
                      for p in op["parameters"]]
    request_parts += [document["components"]["schemas"][name] for name in (
        "ServiceStart", "EndEvent", "Associate", "StateStart", "TaskStart", "Transition",
        "TransitionFrom", "TransitionTo")]

    def numbers(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from numbers(v)
        elif isinstance(value, list):
            for v in value:
                yield from numbers(v)
        elif isinstance(value, int) and not isinstance(value, bool):
            yield value

    assert all(abs(n) < 2**53 for n in numbers(request_parts))


def test_service_start_is_a_typed_object_with_free_extra_keys(client):
    """A client generator makes a model of it (openapi-python-client typed an
    ``anyOf`` of open objects as ``Any``)."""
    start = client.get(SPEC).get_json()["components"]["schemas"]["ServiceStart"]
    assert start["type"] == "object" and start["additionalProperties"] is True
    assert not {"anyOf", "oneOf", "allOf"} & set(start)
    assert {"customer_id", "contact_key", "service_type", "timestamp"} <= set(start["properties"])


def test_docs_page_is_served_offline(client):
    page = client.get("/genesys/1/cs/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/genesys/1/cs/docs/") for a in assets)
    assert "://" not in html
    for asset in assets:
        assert client.get(asset).status_code == 200
    assert client.get("/genesys/1/cs/docs/nothing.js").status_code == 404


# ---------------------------------------------------------------- fuzzing
FUZZ_STATUSES: dict[int, int] = {}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
# the document the requests are generated from (the same on every engine)
schema = schemathesis.openapi.from_wsgi(SPEC, create_app({"storage": {"engine": "memory"}}))
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture(scope="module")
def fuzz_app(request, tmp_path_factory):
    """The app the requests go to, on a store of its own, on the engine the run
    tests (pgcluster.TEST_ENGINE: the file engine, or the postgresql test cluster)."""
    if pgcluster.TEST_ENGINE == "postgresql":
        storage = {"engine": "postgresql", "dsn": request.getfixturevalue("pg_cluster").dsn,
                   "schema": pgcluster.fresh_schema()}
    else:
        storage = {"path": str(tmp_path_factory.mktemp("fuzz") / "contextsvc.json")}
    app = create_app({"storage": {**storage, "lock_timeout": 5}})

    @app.after_request
    def _count(response):
        FUZZ_STATUSES[response.status_code] = FUZZ_STATUSES.get(response.status_code, 0) + 1
        return response

    seed = app.test_client()
    for _ in range(3):  # some ids that exist, so that success responses are checked too
        sid = seed.post("/services/start", json={"customer_id": "C1", "contact_key": "K1",
                                                 "a": {"b": 1}}).get_json()["service_id"]
        seed.post(f"/services/{sid}/states/start", json={"state_type": 1})
        seed.post(f"/services/{sid}/tasks/start", json={"state_id": 1})
    seed.post("/services/start", json={"contact_key": "K1"})
    return app


# the run on postgresql (a second pass in CI, see .ci/run) tries the first half
EXAMPLES = 20 if pgcluster.TEST_ENGINE == "postgresql" else 40


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_fuzz_every_operation(case, fuzz_app):
    """40 generated requests per operation (20 on postgresql), valid and invalid;
    fixed seed."""
    case.call_and_validate(checks=CHECKS, app=fuzz_app)


@pytest.fixture(scope="module", autouse=True)
def _report_fuzz_size(request):
    FUZZ_STATUSES.clear()
    yield
    operations = sum(1 for item in request.session.items
                     if "test_fuzz_every_operation" in item.name)
    total = sum(FUZZ_STATUSES.values())
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(FUZZ_STATUSES.items()))
    print(f"\nfuzzing: {operations} operations, {total} requests ({statuses})")
