"""The server's configuration under a real gunicorn: a configuration that cannot
be used stops it with one line and exit status 78 (EX_CONFIG), and ``[server]
bind`` / ``workers`` are honoured, with gunicorn's own ``-b`` / ``-w`` winning."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from contextsvc import config
from tests.gunicorn_server import ROOT, free_port

GUNICORN_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] "
                           r"\[(INFO|WARNING|ERROR)\] ")
CONF = ("-c", "python:contextsvc.gunicorn_conf")


def environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTEXTSVC_", "GUNICORN"))}
    return {**env, **extra}


def gunicorn(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gunicorn", *args, "wsgi:app"], cwd=ROOT,
                            env=environment(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out


def run_to_the_end(*args: str, env: dict[str, str]) -> tuple[int, list[str]]:
    """Run gunicorn until it stops by itself (a server that starts fails the test)."""
    proc = gunicorn(*args, env=env)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("gunicorn started on a bad configuration: " + stop(proc)) from None
    return proc.returncode, out.splitlines()


def write_ini(tmp_path, text: str) -> str:
    path = tmp_path / "contextsvc.ini"
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------ bad configurations
BAD = {
    "not a boolean": ("[storage]\nfsync = perhaps\n", {},
                      ["[storage] fsync", "expected true or false", "'perhaps'"]),
    "not a duration": ("[lifecycle]\nexpiration = soon\n", {},
                       ["[lifecycle] expiration", "expected a duration", "'soon'"]),
    "unknown key": ("[storage]\npathh = x\n", {}, ["unknown key 'pathh' in [storage]"]),
    "unknown section": ("[strage]\npath = x\n", {}, ["unknown section [strage]"]),
    "no workers": ("[server]\nworkers = 0\n", {}, ["[server] workers", "positive"]),
    "bad bind": ("[server]\nbind = localhost\n", {}, ["[server] bind", "HOST:PORT"]),
    "bad per-type expiration": ("[expiration]\nwireless = soon\n", {},
                                ["[expiration] wireless", "'soon'"]),
    "misspelt variable": ("", {"CONTEXTSVC_STORAGE_PATHH": "/tmp/x.json"},
                          ["CONTEXTSVC_STORAGE_PATHH", "names no setting",
                           "did you mean CONTEXTSVC_STORAGE_PATH?"]),
    "unknown variable": ("", {"CONTEXTSVC_LIFECYCLE_EXPIRE": "1d"},
                         ["CONTEXTSVC_LIFECYCLE_EXPIRE", "names no setting"]),
    "per-type variable": ("", {"CONTEXTSVC_EXPIRATION_WIRELESS": "1d"},
                          ["CONTEXTSVC_EXPIRATION_WIRELESS", "[expiration] section"]),
    "bad variable value": ("", {"CONTEXTSVC_STORAGE_FSYNC": "perhaps"},
                           ["CONTEXTSVC_STORAGE_FSYNC:", "expected true or false"]),
    "tenant in no directory": ("[tenants]\nacme = /nonexistent/contextsvc/acme.json\n", {},
                               ["[tenants] acme", "/nonexistent/contextsvc does not exist"]),
    "tenants sharing a file": ("[tenants]\nacme = /tmp/shared.json\nglobex = /tmp/shared.json\n",
                               {}, ["[tenants] globex", "/tmp/shared.json is the data file of "
                                    "acme too"]),
    "tenant variable": ("", {"CONTEXTSVC_TENANTS_ACME": "/tmp/acme.json"},
                        ["CONTEXTSVC_TENANTS_ACME", "[tenants] section"]),
    "missing file": (None, {}, ["cannot read CONTEXTSVC_CONFIG=", "No such file"]),
    "not an INI file": ("fsync = 1\n[", {}, ["cannot parse", "contextsvc.ini"]),
}


UNDER_GUNICORN = ["not a boolean", "not a duration", "unknown key", "misspelt variable",
                  "per-type variable", "missing file", "tenant in no directory"]


def case_environment(tmp_path, case: str) -> dict[str, str]:
    ini, variables, _ = BAD[case]
    path = str(tmp_path / "missing.ini") if ini is None else write_ini(tmp_path, ini)
    return {"CONTEXTSVC_CONFIG": path, **variables}


def check_line(line: str, case: str, environ: dict[str, str]) -> None:
    assert line.startswith("contextsvc: error: configuration: "), line
    for part in BAD[case][2]:
        assert part in line, line
    if BAD[case][0]:
        assert environ["CONTEXTSVC_CONFIG"] in line  # the file is named


@pytest.mark.parametrize("case", UNDER_GUNICORN)
def test_a_bad_configuration_stops_gunicorn_in_one_line_with_status_78(tmp_path, case):
    environ = case_environment(tmp_path, case)
    status, lines = run_to_the_end(*CONF, "-w", "4", "-b", f"127.0.0.1:{free_port()}",
                                   env=environ)
    assert status == config.EXIT_CONFIG == 78, lines
    assert len(lines) == 1, lines
    check_line(lines[0], case, environ)


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_configuration_is_one_line_naming_where_and_what(tmp_path, case):
    """The same checks without starting gunicorn, for every kind of mistake."""
    environ = case_environment(tmp_path, case)
    with pytest.raises(config.ConfigError) as caught:
        config.load(environ=environ)
    line = config.error_line(caught.value)
    assert "\n" not in line
    check_line(line, case, environ)


def test_a_bad_variable_given_to_gunicorn_with_e_stops_it_in_one_line_too(tmp_path):
    status, lines = run_to_the_end(*CONF, "-e", "CONTEXTSVC_STORAGE_FSYNC=perhaps",
                                   "-b", f"127.0.0.1:{free_port()}", env={})
    assert status == 78, lines
    errors = [line for line in lines if not GUNICORN_LINE.match(line)]
    assert errors == ["contextsvc: error: configuration: CONTEXTSVC_STORAGE_FSYNC: expected "
                      "true or false, got 'perhaps'"], "\n".join(lines)


@pytest.mark.parametrize("worker_class", ["sync", "gevent"])
def test_without_the_contextsvc_gunicorn_conf_a_bad_configuration_is_one_line_too(
        tmp_path, worker_class):
    """No -c: the workers read the configuration. gunicorn prints its own lines and
    stops with its "App failed to load" status, 4; the error is one line, once."""
    path = write_ini(tmp_path, "[storage]\nfsync = perhaps\n")
    status, lines = run_to_the_end("-k", worker_class, "-w", "4",
                                   "-b", f"127.0.0.1:{free_port()}",
                                   env={"CONTEXTSVC_CONFIG": path})
    assert status == 4, lines
    assert not any("Traceback" in line for line in lines), lines
    errors = [line for line in lines if not GUNICORN_LINE.match(line)]
    assert errors == [f"contextsvc: error: configuration: {path}: [storage] fsync: expected "
                      "true or false, got 'perhaps'"], "\n".join(lines)
    assert any("App failed to load" in line for line in lines)


def test_with_preload_a_bad_configuration_stops_the_master_with_78(tmp_path):
    path = write_ini(tmp_path, "[lifecycle]\nsweep_interval = often\n")
    status, lines = run_to_the_end("--preload", "-w", "2", "-b", f"127.0.0.1:{free_port()}",
                                   env={"CONTEXTSVC_CONFIG": path})
    assert status == 78, lines
    assert len(lines) == 1 and "[lifecycle] sweep_interval" in lines[0], lines


# ------------------------------------------------------------------ [server] bind, workers
def health(port: int) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        json.loads(response.read())
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def serve(*args: str, env: dict[str, str], port: int, db_path) -> subprocess.Popen:
    proc = gunicorn(*args, env={"CONTEXTSVC_STORAGE_PATH": str(db_path), **env})
    deadline = time.monotonic() + 30
    while health(port) != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("gunicorn did not answer: " + stop(proc))
        time.sleep(0.1)
    return proc


def booted_workers(output: str) -> int:
    return len(re.findall(r"\[INFO\] Booting worker with pid", output))


def test_the_server_section_sets_the_address_and_the_number_of_workers(tmp_path):
    port = free_port()
    path = write_ini(tmp_path, f"[server]\nbind = 127.0.0.1:{port}\nworkers = 3\n")
    proc = serve(*CONF, env={"CONTEXTSVC_CONFIG": path}, port=port,
                 db_path=tmp_path / "db.json")
    output = stop(proc)
    assert booted_workers(output) == 3, output
    assert f"Listening at: http://127.0.0.1:{port}" in output


def test_the_environment_sets_them_too(tmp_path):
    port = free_port()
    path = write_ini(tmp_path, "[server]\nbind = 127.0.0.1:1\nworkers = 3\n")
    proc = serve(*CONF, env={"CONTEXTSVC_CONFIG": path, "CONTEXTSVC_SERVER_WORKERS": "2",
                             "CONTEXTSVC_SERVER_BIND": f"127.0.0.1:{port}"}, port=port,
                 db_path=tmp_path / "db.json")
    assert booted_workers(stop(proc)) == 2


def test_gunicorns_command_line_wins_over_the_server_section(tmp_path):
    configured, given = free_port(), free_port()
    path = write_ini(tmp_path, f"[server]\nbind = 127.0.0.1:{configured}\nworkers = 3\n")
    proc = serve(*CONF, "-b", f"127.0.0.1:{given}", "-w", "1",
                 env={"CONTEXTSVC_CONFIG": path}, port=given,
                 db_path=tmp_path / "db.json")
    try:
        assert health(configured) is None  # nothing listens there
    finally:
        output = stop(proc)
    assert booted_workers(output) == 1, output


def test_gunicorn_cmd_args_win_over_the_server_section(tmp_path):
    port = free_port()
    path = write_ini(tmp_path, f"[server]\nbind = 127.0.0.1:{port}\nworkers = 3\n")
    proc = serve(*CONF, env={"CONTEXTSVC_CONFIG": path, "GUNICORN_CMD_ARGS": "--workers 2"},
                 port=port,
                 db_path=tmp_path / "db.json")
    assert booted_workers(stop(proc)) == 2


def test_the_defaults_are_the_readme_run_command():
    settings = config.load(environ={})
    assert settings["server"] == {"bind": ["127.0.0.1:8080"], "workers": 4}
    readme = open(os.path.join(ROOT, "README.rst"), encoding="utf-8").read()
    assert "-w 4 -b 127.0.0.1:8080 wsgi:app" in readme


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_server_stopped_while_its_workers_boot_stops_at_once(tmp_path, signum):
    """A stop signal sent to every process of the server (as ``kill`` of its process
    group, or systemd, sends it) while the workers are still booting: the server
    stops within seconds, not after its graceful timeout (30 s) of waiting for
    workers that missed the signal."""
    port = free_port()
    proc = gunicorn(*CONF, "-b", f"127.0.0.1:{port}", "-w", "3",
                    env={"CONTEXTSVC_STORAGE_PATH": str(tmp_path / "db.json")})
    lines = []
    try:
        for line in proc.stdout:  # the master logs it once the worker is forked
            lines.append(line)
            if "Booting worker with pid" in line:
                break
        assert lines and "Booting worker" in lines[-1], "".join(lines)
        signalled = time.monotonic()
        os.killpg(proc.pid, signum)
        rest, _ = proc.communicate(timeout=60)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert took < 10, "".join(lines) + rest
    assert "Shutting down: Master" in rest, "".join(lines) + rest
