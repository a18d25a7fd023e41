"""URLs the app builds from its routes (``url_for``: the pages' links and assets)
lead back to the route they were built from, for every route the app has, the
first time a route builds one and the times after (the builders are compiled on
first use)."""

import re

import pytest
from flask import url_for

from contextsvc import create_app

ARGUMENT = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


@pytest.fixture
def plain_app(tmp_path):
    return create_app({"storage": {"engine": "memory"}})


def _values(rule):
    """A value for each of the rule's path arguments: an id, or a word."""
    return {name: 7 if converter == "id" else "a-b"
            for converter, name in ARGUMENT.findall(rule.rule)}


def test_every_route_builds_urls_that_lead_back_to_it(plain_app):
    rules = list(plain_app.url_map.iter_rules())
    assert len(rules) > 80
    with plain_app.test_request_context():
        adapter = plain_app.url_map.bind("localhost")
        for rule in rules:
            values = _values(rule)
            # the defaults tell apart the rules of one endpoint (None: given by none)
            given = {**{k: v for k, v in (rule.defaults or {}).items() if v is not None},
                     **values}
            for _ in range(2):
                path = url_for(rule.endpoint, **given)
                method = sorted(rule.methods - {"HEAD", "OPTIONS"} or rule.methods)[0]
                endpoint, matched = adapter.match(path, method=method)
                assert endpoint == rule.endpoint, path
                assert values.items() <= matched.items(), path
            # unknown values go to the query string
            with_query = url_for(rule.endpoint, **given, page="2", q="x y")
            assert with_query == path + "?page=2&q=x+y"


def test_the_pages_links_are_built(client):
    docs = client.get("/genesys/1/cs/docs")
    assert docs.status_code == 200
    assert "/genesys/1/cs/openapi.json" in docs.get_data(as_text=True)
    page = client.get("/journey")
    assert page.status_code == 200
