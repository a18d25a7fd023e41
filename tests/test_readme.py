"""The README's two commands are the ones CI and newcomers run."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
    text = open(os.path.join(ROOT, "README.rst"), encoding="utf-8").read()
    return re.findall(r"^    (python3 -m venv .venv && .*)$", text, re.MULTILINE)


def test_readme_has_a_run_and_a_test_command():
    commands = readme_commands()
    assert any("gunicorn" in c and "wsgi:app" in c for c in commands)
    assert any(c.endswith("pytest") for c in commands)


def test_ci_runs_the_readme_test_command():
    test_command = next(c for c in readme_commands() if c.endswith("pytest"))
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert test_command in ci.splitlines()
