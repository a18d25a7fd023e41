"""The journey page as served (API.md 9): under both prefixes, with assets of its
own and a policy that lets it load and call nothing but the service; and the names
it takes for fields (the rest of an object is attached data) are the API's. What it
does in a browser: tests/test_journey_browser.py."""

from __future__ import annotations

import json
import re

ALL = {"active_states": "true", "completed_states": "true", "active_tasks": "true",
       "completed_tasks": "true"}


def test_the_page_and_its_assets_under_both_prefixes(client, base):
    r = client.get(f"{base}/journey?customer_id=ABC1234")
    assert r.status_code == 200 and r.mimetype == "text/html"
    policy = dict(d.strip().split(" ", 1) for d in r.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'self'"
    # no directive names a host or a scheme: nothing but this origin
    assert set(" ".join(policy.values()).split()) <= {"'self'", "'none'"}
    html = r.get_data(as_text=True)
    assert "://" not in html
    assert f'data-api="{base}"' in html
    links = re.findall(r'(?:src|href)="([^"]+)"', html)
    assets = [a for a in links if a != f"{base}/docs"]
    assert len(links) == len(assets) + 1  # and a link to the docs of the same prefix
    assert sorted(a.removeprefix(f"{base}/journey/assets/") for a in assets) == [
        "icon.svg", "journey.css", "journey.js"]
    types = {"icon.svg": "image/svg+xml", "journey.css": "text/css",
             "journey.js": "text/javascript"}
    for asset in assets:
        got = client.get(asset)
        assert got.status_code == 200 and got.mimetype == types[asset.rsplit("/", 1)[1]]
    missing = client.get(f"{base}/journey/assets/nothing.js")
    assert missing.status_code == 404 and missing.get_json()["exception"] == "NotFoundException"


def test_the_page_tells_attached_data_from_fields_as_the_api_does(client, api):
    html = client.get("/journey").get_data(as_text=True)
    fields = json.loads(re.search(r"data-fields='([^']*)'", html).group(1))
    sid = api.start_service(customer_id="C1", service_type=3, est_duration=60, coupon="X1",
                            auto_complete_after=600, ttl=3600)
    state = api.start_state(sid, state_type="s", queue="q")
    api.start_task(sid, state_id=state, task_type="t", note={"a": 1})
    api.end(f"/services/{sid}/tasks/1/end", disposition="ok")
    service = api.get(f"/services/{sid}", **ALL)
    assert set(service) - set(fields["service"]) == {"coupon"}
    assert {"expiration_time", "auto_complete_at"} <= set(service) & set(fields["service"])
    assert set(service["active_states"][0]) - set(fields["state"]) == {"queue"}
    assert set(service["completed_tasks"][0]) - set(fields["task"]) == {"note"}
