"""The systemd recipes of docs/systemd: units systemd accepts without a warning,
with the settings the README relies on, and a server command that starts."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from contextsvc import config
from tests.gunicorn_server import ROOT, free_port
from tests.test_server_config import health, stop

UNITS = os.path.join(ROOT, "docs", "systemd")
NAMES = ("contextsvc.service", "contextsvc-sweep.service", "contextsvc-sweep.timer")
INSTALLED = "/opt/contextsvc"
BIN = os.path.dirname(sys.executable)


def parse(name: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]} (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in open(os.path.join(UNITS, name), encoding="utf-8"):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None and "=" in line, f"{name}: {line!r}"
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict, section: str, key: str) -> str:
    [value] = values(unit, section, key)
    return value


def here(text: str) -> str:
    """A unit's paths made to point at this checkout and its virtual environment."""
    return text.replace(f"{INSTALLED}/.venv/bin/", BIN + "/").replace(INSTALLED, ROOT)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_units_without_a_warning(tmp_path):
    for name in NAMES:
        text = open(os.path.join(UNITS, name), encoding="utf-8").read()
        (tmp_path / name).write_text(here(text))
    done = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / n) for n in NAMES)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done


def test_the_server_unit_restarts_on_crashes_but_not_on_a_configuration_error():
    unit = parse("contextsvc.service")
    assert one(unit, "Service", "Restart") == "on-failure"
    assert str(config.EXIT_CONFIG) in one(unit, "Service", "RestartPreventExitStatus").split()
    assert one(unit, "Service", "Type") == "notify"
    # SIGTERM to the master, which stops its workers within gunicorn's graceful_timeout
    assert one(unit, "Service", "KillMode") == "mixed"
    assert int(one(unit, "Service", "TimeoutStopSec")) > 30
    assert one(unit, "Service", "User") not in ("", "root")
    assert one(unit, "Service", "WorkingDirectory").startswith("/")
    assert any(v.startswith("CONTEXTSVC_CONFIG=/") for v in values(unit, "Service",
                                                                     "Environment"))
    command = shlex.split(one(unit, "Service", "ExecStart"))
    assert command[0].endswith("/gunicorn") and command[-1] == "wsgi:app"
    assert "python:contextsvc.gunicorn_conf" in command
    assert not {"-b", "--bind", "-w", "--workers"} & set(command)  # [server] decides


def test_the_sweep_runs_as_the_server_does_from_a_timer():
    server = parse("contextsvc.service")
    sweep = parse("contextsvc-sweep.service")
    timer = parse("contextsvc-sweep.timer")
    assert one(sweep, "Service", "Type") == "oneshot"
    assert shlex.split(one(sweep, "Service", "ExecStart"))[-2:] == [
        f"{INSTALLED}/.venv/bin/contextsvc", "sweep"]
    for key in ("User", "Group", "WorkingDirectory", "StateDirectory"):
        assert one(sweep, "Service", key) == one(server, "Service", key), key
    config_of = [v for v in values(server, "Service", "Environment") if "CONTEXTSVC_" in v]
    assert values(sweep, "Service", "Environment") == config_of
    assert "Unit" not in timer["Timer"]  # so it starts contextsvc-sweep.service
    assert values(timer, "Timer", "OnUnitInactiveSec") and values(timer, "Timer", "OnActiveSec")
    assert one(timer, "Install", "WantedBy") == "timers.target"


def test_the_server_units_command_serves_from_its_working_directory(tmp_path):
    """ExecStart as written (paths moved to this checkout), in an empty working
    directory, with the unit's environment: the server answers, and the default
    data file is created under the working directory."""
    service = parse("contextsvc.service")
    port = free_port()
    ini = tmp_path / "contextsvc.ini"
    ini.write_text(f"[server]\nbind = 127.0.0.1:{port}\nworkers = 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTEXTSVC_", "GUNICORN"))}
    for assignment in values(service, "Service", "Environment"):
        key, value = assignment.split("=", 1)
        env[key] = value
    env["CONTEXTSVC_CONFIG"] = str(ini)
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    workdir = tmp_path / "state"
    workdir.mkdir()
    command = shlex.split(here(one(service, "Service", "ExecStart")))
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while health(port) != 200:
            assert proc.poll() is None and time.monotonic() < deadline, stop(proc)
            time.sleep(0.1)
    finally:
        stop(proc)
    assert (workdir / "data" / "contextsvc.json").exists()
