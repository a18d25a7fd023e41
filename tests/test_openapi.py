"""The OpenAPI document, the offline docs page, and schema-driven fuzzing of every
operation (schemathesis): no 5xx, and responses that conform to the document."""

import re
import tempfile

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
                ("docs.", "static")):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule[len("/genesys/1/cs"):])
            routes |= {(m, path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == routes
    assert len(documented) == 30
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


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
FUZZ_DIR = tempfile.mkdtemp(prefix="contextsvc-fuzz-")
fuzz_app = create_app({"storage": {"path": f"{FUZZ_DIR}/contextsvc.json", "lock_timeout": 5}})
FUZZ_STATUSES: dict[int, int] = {}


@fuzz_app.after_request
def _count(response):
    FUZZ_STATUSES[response.status_code] = FUZZ_STATUSES.get(response.status_code, 0) + 1
    return response


_seed = fuzz_app.test_client()
for _ in range(3):  # some ids that exist, so that success responses are checked too
    _sid = _seed.post("/services/start", json={"customer_id": "C1", "contact_key": "K1",
                                               "a": {"b": 1}}).get_json()["service_id"]
    _seed.post(f"/services/{_sid}/states/start", json={"state_type": 1})
    _seed.post(f"/services/{_sid}/tasks/start", json={"state_id": 1})
_seed.post("/services/start", json={"contact_key": "K1"})

schema = schemathesis.openapi.from_wsgi(SPEC, fuzz_app)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_fuzz_every_operation(case):
    """40 generated requests per operation, valid and invalid; fixed seed."""
    case.call_and_validate(checks=CHECKS)


@pytest.fixture(scope="module", autouse=True)
def _report_fuzz_size(request):
    FUZZ_STATUSES.clear()
    yield
    operations = sum(1 for item in request.session.items
                     if "test_fuzz_every_operation" in item.name)
    total = sum(FUZZ_STATUSES.values())
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(FUZZ_STATUSES.items()))
    print(f"\nfuzzing: {operations} operations, {total} requests ({statuses})")
