"""``contextsvc backup``, ``check`` and ``compact`` as installed, on stores that a
real ``gunicorn -w 4`` is using where the claim is about a running server; and how
every store-keeping command fails (configuration, engine, missing store)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time

import pytest

from tests.commands import (
    COMMAND,
    Writers,
    client,
    contextsvc,
    errors_in_log,
    figures,
    fill,
    holds,
    one_line_failure,
)
from tests.gunicorn_server import ROOT, Server

pytestmark = pytest.mark.file_engine  # about the data file


# ------------------------------------------------------------------ check
def test_check_counts_services_and_what_compact_frees(tmp_path):
    path = tmp_path / "db.json"
    sids = fill(path, starts=20, updates=30)
    api = client(path)
    for sid in sids[:2]:
        assert api.delete(f"/services/{sid}").status_code == 200
    checked = figures(contextsvc("check", path=path))
    assert checked["store"] == str(path)
    assert int(checked["services"]) == 18
    assert 0 < int(checked["reclaimable"]) < int(checked["bytes"])

    compacted = figures(contextsvc("compact", path=path))
    assert compacted["services"] == "18"
    assert compacted["bytes before"] == checked["bytes"]
    assert int(compacted["bytes after"]) == int(checked["bytes"]) - int(checked["reclaimable"])
    again = figures(contextsvc("check", path=path))
    assert again["services"] == "18" and again["reclaimable"] == "0"
    assert again["bytes"] == compacted["bytes after"]
    for i, sid in enumerate(sids[2:], start=2):
        doc = client(path).get(f"/services/{sid}").get_json()
        assert doc["n"] == 100 + i and doc["u"] == max(u for u in range(30) if u % 20 == i)


DAMAGE = {
    # name: (how the file is damaged, what the one line on stderr says)
    "cut short in the middle": (lambda data: data[:_half(data)], "cut short"),
    "cut at a record's end": (lambda data: data[:data.index(b"\n", _half(data)) + 1],
                              "cut short"),
    "garbage written over a record": (
        lambda data: _at_record(data, 10, lambda r: r[:8] + b"\x00garbage\x00" + r[17:]),
        "damaged at byte"),
    "garbage inside a document": (
        lambda data: _at_record(data, 10, lambda r: r.replace(b'"pad":"', b'"pad":#', 1)),
        "not JSON"),
    "NaN in a document": (
        lambda data: data.replace(b'"n":110', b'"n":NaN', 1), "not JSON"),
    "a document filed under another id": (
        lambda data: _at_record(data, 10, lambda r: r.replace(b'"10": ', b'"12": ', 1)),
        "not that service's document"),
    "a document indexed under other keys": (
        lambda data: _at_record(data, 10, lambda r: r[:-2] + b',"customer_id":"X"}\n'),
        "indexed under other keys"),
    "a comma missing between records": (
        lambda data: _at_record(data, 10, lambda r: r[1:7] + b" " + r[7:]), "comma is missing"),
    "records after the end": (
        lambda data: data.rstrip() + b'\n,"99": {"service_id":99}\n', "after the end"),
    "not JSON at all": (lambda data: b"this is not a store\n" + data, "not a contextsvc store"),
    "a plain JSON document": (lambda data: b'{"services": {}}\n', "not a contextsvc store"),
    "empty": (lambda data: b"", "empty"),
}


def _half(data: bytes) -> int:
    """Half way through the records (the file ends in a megabyte of padding)."""
    return data.index(b"\n}}\n") // 2


def _at_record(data: bytes, n: int, change) -> bytes:
    """``data`` with its ``n``-th record line (the header is line 0) changed."""
    lines = data.split(b"\n")
    lines[n] = change(lines[n] + b"\n")[:-1]
    return b"\n".join(lines)


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_check_names_the_damage_in_one_line_and_changes_nothing(tmp_path, damage):
    path = tmp_path / "db.json"
    fill(path, starts=20, updates=5)
    assert contextsvc("check", path=path).returncode == 0
    spoil, says = damage
    path.write_bytes(spoil(path.read_bytes()))  # in place: same file, same lock file
    data, lock = path.read_bytes(), (tmp_path / "db.json.lock").read_bytes()
    line = one_line_failure(contextsvc("check", path=path))
    assert str(path) in line and says in line, line
    line = one_line_failure(contextsvc("backup", str(tmp_path / "copy.json"), path=path))
    assert str(path) in line and says in line, line  # no backup of a damaged store
    assert path.read_bytes() == data and (tmp_path / "db.json.lock").read_bytes() == lock
    assert sorted(os.listdir(tmp_path)) == ["db.json", "db.json.lock"]


def test_check_accepts_a_write_interrupted_by_a_crash_with_a_note(tmp_path):
    path = tmp_path / "db.json"
    fill(path, starts=5, updates=0)
    data = path.read_bytes()
    at = data.rindex(b"\n}}\n") + 1  # a writer killed mid-write: half a record, no trailer
    path.write_bytes(data[:at] + b',"6": {"service_id":6,"custo' + data[at + 28:])
    before = path.read_bytes()
    result = contextsvc("check", path=path)
    assert figures(result)["services"] == "5"
    assert "note: a write interrupted by a crash" in result.stdout
    assert path.read_bytes() == before


def test_check_notes_an_older_copy_put_in_place_of_the_file(tmp_path):
    path = tmp_path / "db.json"
    fill(path, starts=5, updates=0)
    older = path.read_bytes()
    fill(path, starts=5, updates=0)
    path.write_bytes(older)  # `cp backup.json db.json`: same file, fewer records
    result = contextsvc("check", path=path)
    assert figures(result)["services"] == "5"
    assert "note: " in result.stdout and "an older copy of the file" in result.stdout


def test_check_changes_nothing_on_a_read_only_file_system(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a file system to make read-only: {mounted.stderr.strip()}")
    try:
        path, held = disk / "db.json", disk / "held.json"
        # in another process, whose files are closed when it ends (else: "busy")
        subprocess.run([sys.executable, "-c", "from tests.commands import fill; "
                        f"fill({str(path)!r}, 10, 10); fill({str(held)!r}, 3, 0)"],
                       cwd=ROOT, check=True, capture_output=True)
        os.unlink(disk / "held.json.lock")  # a store no process has locked yet
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(OSError):
            (disk / "probe").write_bytes(b"")
        checked = figures(contextsvc("check", path=path))
        assert checked["services"] == "10" and int(checked["reclaimable"]) > 0
        assert figures(contextsvc("check", path=held))["services"] == "3"
        assert not os.path.exists(disk / "held.json.lock")
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# ------------------------------------------------------------------ backup
def test_backup_while_gunicorn_takes_writes_holds_every_acknowledged_write(tmp_path):
    path = tmp_path / "db.json"
    fill(path, starts=300, updates=0, pad=500)
    server = Server(str(path), workers=4)
    writers = None
    try:
        writers = Writers(server)
        while len(writers.acked) < 200:
            time.sleep(0.05)
        began = time.monotonic()
        backed = contextsvc("backup", str(tmp_path / "copy.json"), path=path)
        ended = time.monotonic()
        checked = contextsvc("check", path=path)  # the live store, while it serves
        while sum(when > ended for when, _, _ in writers.acked) < 100:
            time.sleep(0.05)
        writers.stop()
        assert figures(backed)["backup"] == str(tmp_path / "copy.json")
        assert figures(checked)["services"]
        assert not writers.refused, writers.refused[:3]
        assert not holds(server, writers.newest_before(float("inf")))
        assert not errors_in_log(server)
    finally:
        if writers is not None:
            writers.stop()
        server.stop()

    copied = figures(contextsvc("check", path=tmp_path / "copy.json"))
    assert int(copied["services"]) == int(figures(backed)["services"])
    before = writers.newest_before(began)
    assert len(before) >= 100
    restored = Server(str(tmp_path / "copy.json"), workers=2)
    try:
        assert not holds(restored, before)
        status, doc, _ = restored.request("GET", "/services/1")
        assert status == 200 and doc["n"] == 100
        # ids go on after the highest one the copy holds
        status, body, _ = restored.request("POST", "/services/start", {"customer_id": "R"})
        assert status == 201 and body["service_id"] == int(copied["services"]) + 1
    finally:
        restored.stop()


def test_backups_during_compactions_are_sound(tmp_path):
    path = tmp_path / "db.json"
    fill(path, starts=1000, updates=0, pad=2000)  # 2 MB: copied in several steps
    # the server compacts by itself once old versions take half the file...
    server = Server(str(path), workers=4, extra_env={
        "CONTEXTSVC_STORAGE_COMPACT_MIN_BYTES": "1000000",
        "CONTEXTSVC_STORAGE_COMPACT_RATIO": "1.5"})
    writers, compacted, copies = None, [], []
    try:
        writers = Writers(server, threads=3, pad=2000)
        for n in range(4):
            # ...and `contextsvc compact` compacts while the backup copies
            compacting = subprocess.Popen([COMMAND, "compact"], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env={
                                              **os.environ, "CONTEXTSVC_STORAGE_PATH": str(path)})
            began = time.monotonic()
            backed = contextsvc("backup", str(tmp_path / f"copy{n}.json"), path=path)
            assert backed.returncode == 0, backed.stderr
            out, err = compacting.communicate(timeout=60)
            assert compacting.returncode == 0, err
            shrunk = figures(subprocess.CompletedProcess([], 0, out, err))
            compacted.append(int(shrunk["bytes after"]) < int(shrunk["bytes before"]))
            copies.append((tmp_path / f"copy{n}.json", writers.newest_before(began)))
        writers.stop()
        assert not writers.refused, writers.refused[:3]
        assert not errors_in_log(server)
    finally:
        if writers is not None:
            writers.stop()
        server.stop()
    assert sum(compacted) >= 3  # the store was indeed compacted while backups were made
    for copy, before in copies:
        assert figures(contextsvc("check", path=copy))["services"]
        api = client(copy)
        for sid, version in before.items():
            doc = api.get(f"/services/{sid}").get_json()
            assert doc["v"] >= version, (copy, sid)


def test_backup_refuses_what_it_must_not_write_over(tmp_path):
    path = tmp_path / "db.json"
    fill(path, starts=3, updates=0)
    dest = tmp_path / "copy.json"
    dest.write_bytes(b"an older backup")
    line = one_line_failure(contextsvc("backup", str(dest), path=path))
    assert "exists" in line and "--force" in line
    assert dest.read_bytes() == b"an older backup"
    for own in (path, tmp_path / "db.json.lock"):
        line = one_line_failure(contextsvc("backup", "--force", str(own), path=path))
        assert "of the store itself" in line
    assert figures(contextsvc("backup", "--force", str(dest), path=path))["services"] == "3"
    assert figures(contextsvc("check", path=dest))["services"] == "3"
    folder = tmp_path / "backups"
    folder.mkdir()
    backed = figures(contextsvc("backup", str(folder), path=path))
    assert backed["backup"] == str(folder / "db.json")
    assert figures(contextsvc("check", path=folder / "db.json"))["services"] == "3"
    line = one_line_failure(contextsvc("backup", str(tmp_path / "no" / "such" / "dir"),
                                       path=path))
    assert "No such file or directory" in line
    assert sorted(os.listdir(tmp_path)) == ["backups", "copy.json", "db.json", "db.json.lock"]


def test_long_runs_show_progress_on_a_terminal_only(tmp_path):
    path = tmp_path / "db.json"
    fill(path, starts=3, updates=0)
    piped = contextsvc("backup", str(tmp_path / "piped.json"), path=path)
    assert piped.returncode == 0 and piped.stderr == ""
    leader, follower = pty.openpty()
    try:
        shown = contextsvc("backup", str(tmp_path / "shown.json"), path=path, stderr=follower,
                           stdout=subprocess.PIPE, capture_output=False)
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal is closed once the command is gone
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
    assert shown.returncode == 0
    assert re.search(rb"backup.*100%", out), out


# ------------------------------------------------------------------ compact
def test_compact_under_a_running_server_loses_no_write(tmp_path):
    path = tmp_path / "db.json"
    fill(path, starts=200, updates=600, pad=500)
    server = Server(str(path), workers=4)
    writers = None
    try:
        writers = Writers(server)
        while len(writers.acked) < 100:
            time.sleep(0.05)
        compacted = figures(contextsvc("compact", path=path))
        done = time.monotonic()
        while sum(when > done for when, _, _ in writers.acked) < 50:
            time.sleep(0.05)
        writers.stop()
        assert int(compacted["bytes after"]) < int(compacted["bytes before"])
        assert not writers.refused, writers.refused[:3]
        assert not holds(server, writers.newest_before(float("inf")))
        assert not errors_in_log(server)
        status, doc, _ = server.request("GET", "/services/200")
        assert status == 200 and doc["u"] == 599
    finally:
        if writers is not None:
            writers.stop()
        server.stop()
    assert figures(contextsvc("check", path=path))["services"]


# ------------------------------------------------------------------ every command
COMMANDS = {
    "backup": ("backup", "copy.json"),
    "check": ("check",),
    "compact": ("compact",),
    "purge": ("purge", "--limit", "2026-01-01T00:00:00Z", "--operation", "purge.service.all"),
    "sweep": ("sweep",),
}
BAD_CONFIG = {
    "a value that is not a boolean": "[storage]\nfsync = perhaps\n",
    "an unknown section": "[storage]\nfsync = true\n[nonsense]\nkey = 1\n",
    "a duration that is not one": "[lifecycle]\nexpiration = soon\n",
    "not an INI file": "fsync = true\n",
}


@pytest.mark.parametrize("config", BAD_CONFIG.values(), ids=BAD_CONFIG.keys())
@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_bad_configuration_fails_every_command_in_one_line(tmp_path, command, config):
    path = tmp_path / "db.json"
    fill(path, starts=2, updates=0)
    before = path.read_bytes()
    (tmp_path / "bad.ini").write_text(config)
    result = contextsvc(*command, path=path, cwd=tmp_path,
                        env={"CONTEXTSVC_CONFIG": str(tmp_path / "bad.ini")})
    assert one_line_failure(result).startswith("contextsvc: error: configuration: ")
    assert path.read_bytes() == before and not (tmp_path / "copy.json").exists()


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_the_memory_engine_and_a_missing_store_fail_every_command_in_one_line(tmp_path,
                                                                               command):
    line = one_line_failure(contextsvc(*command, path=tmp_path / "db.json", cwd=tmp_path,
                                       env={"CONTEXTSVC_STORAGE_ENGINE": "memory"}))
    assert "engine = memory" in line
    line = one_line_failure(contextsvc(*command, path=tmp_path / "db.json", cwd=tmp_path))
    assert f"there is no store at {tmp_path / 'db.json'}" in line
    assert os.listdir(tmp_path) == []  # no empty store made on the way
