"""The ``contextsvc`` command as installed: its usage, and how it fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

COMMAND = shutil.which("contextsvc", path=os.path.dirname(sys.executable))


def run(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    assert COMMAND, "the contextsvc command is installed with the package"
    return subprocess.run([COMMAND, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, **kwargs)


def test_the_command_is_installed_and_tells_its_version():
    from contextsvc import __version__

    result = run("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_bad_usage_exits_2():
    result = run("no-such-command")
    assert result.returncode == 2
    assert "No such command" in result.stderr
