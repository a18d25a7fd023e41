"""The domain on its own: rules on plain documents, with no app and no request, and
the descriptions everything else is derived from."""

import subprocess
import sys

import pytest

from contextsvc.domain import inputs, model, queries, rules
from contextsvc.domain.inputs import Input
from contextsvc.errors import Conflict, Invalid, NotFound
from tests.gunicorn_server import ROOT


def test_rules_work_on_plain_documents_without_a_request():
    doc = rules.new_service(7, Input({"contact_key": "k", "service_type": 1,
                                      "timestamp": "2009-05-07T12:00:00.000Z"}, {"a": 1}))
    first = rules.start_state(doc, Input({"state_type": 1}, {}))
    source, target = inputs.transition({"from": {"state_id": first["state_id"]},
                                        "to": {"state_type": 2, "x": 1},
                                        "timestamp": "2009-05-07T12:01:00Z"})
    second = rules.transition(doc, source, target)
    rules.start_task(doc, Input({"state_id": second["state_id"]}, {}))
    rules.end_service(doc, Input({"timestamp": "2009-05-07T12:30:00.000Z"}, {"b": 2}))
    with pytest.raises(Conflict):
        rules.end_service(doc, Input({}, {}))
    with pytest.raises(NotFound):
        rules.end_task(doc, 9, Input({}, {}))
    with pytest.raises(Invalid):
        rules.set_extension(doc, "service", "duration", 1, merge=False)
    shown = model.render_service(doc, {"active_states": True, "completed_states": True,
                                       "active_tasks": True})
    assert shown["service_id"] == 7 and shown["duration"] == 1_800_000
    assert (shown["a"], shown["b"]) == (1, 2)
    assert [s["state_id"] for s in shown["completed_states"]] == [1]
    assert shown["active_states"][0]["previous_state_id"] == 1
    assert shown["active_states"][0]["x"] == 1
    assert shown["active_tasks"][0]["state_id"] == 2
    assert queries.select_services([doc], {"service_types": ["1"]}, "completed") == [doc]


def test_reserved_keys_are_derived_from_the_kinds():
    assert model.RESERVED == {
        "service_id", "state_id", "task_id", "started", "completed", "duration",
        "active_states", "completed_states", "active_tasks", "completed_tasks",
        "ttl", "expiration_time", "auto_complete_after", "auto_complete_at"}


@pytest.mark.parametrize("kind", list(model.KINDS.values()), ids=list(model.KINDS))
def test_documented_output_is_the_rendered_fields(kind):
    documented = set(model.output_schemas()[kind.name]().fields)
    assert documented == set(kind.fields) | set(kind.top) | set(kind.nested)


def test_domain_and_store_import_without_flask():
    code = ("import sys, contextsvc.domain.rules, contextsvc.domain.queries, "
            "contextsvc.storage; assert 'flask' not in sys.modules, 'flask imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
