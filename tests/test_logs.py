"""Request logs: one line per request on stdout, and no personal or attached data."""

import re

from tests.gunicorn_server import Server

SECRETS = ("SECRET-CUSTOMER-42", "408-555-SECRET", "SECRET-ATTACHED-VALUE")
LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[INFO\] "
                  r"(GET|POST|PUT|DELETE) (\S+) (\d{3}) \d+\.\dms$")


def exercise(request):
    """Requests carrying personal and attached data, through ``request(method, path, body)``."""
    sid = request("POST", "/genesys/1/cs/services/start",
                  {"contact_key": SECRETS[1], "note": SECRETS[2]})
    request("GET", f"/services/anonymous/{SECRETS[1]}/active?extensions=note")
    request("POST", f"/customers/{SECRETS[0]}/services/{sid}", {"x": SECRETS[2]})
    request("GET", f"/genesys/1/cs/customers/{SECRETS[0]}/services")
    request("POST", f"/services/{sid}/end", {"disposition": SECRETS[2]})
    request("POST", f"/services/{sid}/end", {})  # 409
    request("GET", f"/nope/{SECRETS[0]}")  # no route
    return sid


EXPECTED = [
    ("POST", "/genesys/1/cs/services/start", "201"),
    ("GET", "/services/anonymous/<contact_key>/active", "200"),
    ("POST", "/customers/<customer_id>/services/{sid}", "200"),
    ("GET", "/genesys/1/cs/customers/<customer_id>/services", "200"),
    ("POST", "/services/{sid}/end", "204"),
    ("POST", "/services/{sid}/end", "409"),
    ("GET", "<unmatched>", "404"),
]


def check(output, sid, others=()):
    """The request lines are the expected ones; any other INFO line starts with one
    of ``others`` (gunicorn's own lines share the format)."""
    assert not any(secret in output for secret in SECRETS), output
    info = [line.split("] [INFO] ", 1)[1] for line in output.splitlines() if "] [INFO] " in line]
    logged = [m.groups() for m in map(LINE.match, output.splitlines()) if m]
    assert len(logged) + sum(line.startswith(tuple(others)) for line in info) == len(info), info
    assert logged[-len(EXPECTED):] == [(m, p.format(sid=sid), s) for m, p, s in EXPECTED]


def test_each_request_is_logged_without_personal_data(client, capsys):
    def request(method, path, body=None):
        body = client.open(path, method=method, json=body).get_json()
        return body.get("service_id") if isinstance(body, dict) else None

    sid = exercise(request)
    check(capsys.readouterr().out, sid)


def test_gunicorn_workers_log_to_stdout(tmp_path):
    server = Server(str(tmp_path / "contextsvc.json"), workers=2)
    try:
        def request(method, path, body=None):
            answer = server.request(method, path, body)[1]
            return answer.get("service_id") if isinstance(answer, dict) else None

        sid = exercise(request)
    finally:
        server.stop()
    check(open(server.log.name).read(), sid, others=(
        "Starting gunicorn", "Listening at", "Using worker", "Booting worker", "Control socket",
        "Handling signal", "Worker exiting", "Shutting down"))


def test_logging_configured_by_the_user_still_gets_every_request_line(client, capsys):
    """The request lines are written straight to stdout while logging is as the app
    set it up; once someone adds a handler or a filter of their own, every line goes
    through logging again, to theirs as to stdout."""
    import logging

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    def request(method, path, body=None):
        body = client.open(path, method=method, json=body).get_json()
        return body.get("service_id") if isinstance(body, dict) else None

    access = logging.getLogger("contextsvc.access")
    handler = Keep()
    access.addHandler(handler)
    try:
        sid = exercise(request)
    finally:
        access.removeHandler(handler)
    check(capsys.readouterr().out, sid)
    assert [" ".join(line.split()[:3]) for line in seen[-len(EXPECTED):]] == [
        f"{m} {p.format(sid=sid)} {s}" for m, p, s in EXPECTED]

    class Quiet(logging.Filter):
        def filter(self, record):
            return "/end" not in record.getMessage()

    quiet = Quiet()
    access.addFilter(quiet)
    try:
        sid = exercise(request)
    finally:
        access.removeFilter(quiet)
    lines = [m.groups() for m in map(LINE.match, capsys.readouterr().out.splitlines()) if m]
    assert lines[-5:] == [(m, p.format(sid=sid), s) for m, p, s in EXPECTED if "/end" not in p]
