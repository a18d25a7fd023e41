"""The file engine's index checkpoint (contextsvc/storage/checkpoint.py): stores
that start from one, take up one another process wrote, or compact, answer
exactly as a store that read the whole file would; a checkpoint that is torn,
stale, of another file or of an older copy of this one is refused (the file is
then read whole) and replaced."""

from __future__ import annotations

import json
import os
import random
import shutil

import pytest
from tinydb import TinyDB

from contextsvc.errors import NotFound, StoreFailure
from contextsvc.storage import LogFile, LogStore, log
from contextsvc.storage.base import RequestKey
from contextsvc.storage.checkpoint import Checkpoint

NOW = "2026-01-01T00:00:00.000Z"
LIVE, EXPIRED = "2026-01-02T00:00:00.000Z", "2025-12-31T00:00:00.000Z"
DUES = ["2026-01-01T00:00:00.000Z", "2026-01-03T12:00:00.000Z", "2026-02-01T00:00:00.000Z",
        "soon", "2027-01-01T00:00:00.000Z"]  # "soon": not a timestamp, compared as text


@pytest.fixture(autouse=True)
def eager(monkeypatch):
    """Processes look for a newer checkpoint at every unit of work."""
    monkeypatch.setattr(log, "ADOPT_AFTER", 0)
    monkeypatch.setattr(log, "LOOK_EVERY", 0)


def open_store(path, every=5):
    return LogStore(LogFile(str(path)), checkpoint_every=every)


class Model:
    """What the store should hold, and the writes that change it (through a store)."""

    def __init__(self, seed=7):
        self.docs: dict[int, dict] = {}
        self.own: dict[str, dict] = {}
        self.last_id = 0
        self.rng = random.Random(seed)
        self.keys = 0

    def doc(self, sid):
        rng = self.rng
        doc = {"service_id": sid, "n": rng.randrange(1000), "pad": "p" * rng.randrange(40)}
        shape = rng.random()
        if shape < 0.6:
            doc["customer_id"] = f"C{rng.randrange(12)}"
        if shape > 0.4:
            doc["contact_key"] = f"k{rng.randrange(8)}"
        if rng.random() < 0.5:
            doc["due"] = rng.choice(DUES)
        if rng.random() < 0.3:
            self.keys += 1
            doc["requests"] = {f"key{self.keys}": self.record()}
        return doc

    def record(self):
        """A claim (running_until): a store never answers one from its memory."""
        return {"until": LIVE, "running_until": LIVE, "n": self.keys}

    def write(self, store, upkeep=True):
        """One write, chosen at random; with ``upkeep``, sometimes a checkpoint or a
        compaction instead."""
        rng = self.rng
        kind = rng.random() * (1 if upkeep else 0.9)
        live = sorted(self.docs)
        if kind < 0.35 or not live:
            made = store.create_service(self.doc)
            self.docs[made["service_id"]] = made
            self.last_id = max(self.last_id, made["service_id"])
        elif kind < 0.6:
            sid = rng.choice(live)
            new = self.doc(sid)
            old = self.docs[sid]
            if "requests" in old and rng.random() < 0.5:  # keeps an expired record
                new["requests"] = {name: {**rec, "until": EXPIRED}
                                   for name, rec in old["requests"].items()}

            def change(doc, new=new):
                doc.clear()
                doc.update(new)

            store.update_service(sid, change)
            self.docs[sid] = new
        elif kind < 0.75:
            sid = rng.choice(live)
            store.delete_service(sid)
            del self.docs[sid]
        elif kind < 0.85:  # import: new ids above the last, and deleted ones again
            gone = [sid for sid in range(1, self.last_id + 1) if sid not in self.docs]
            sids = rng.sample(gone, min(2, len(gone))) + [self.last_id + rng.randrange(1, 4)]
            docs = [self.doc(sid) for sid in sids]
            store.put_services(docs)
            for doc in docs:
                self.docs[doc["service_id"]] = doc
            self.last_id = max(self.last_id, *sids)
        elif kind < 0.9:
            self.keys += 1
            name = f"key{self.keys}"
            record = self.record()
            store.put_request(RequestKey(name, NOW), record)
            self.own = {k: v for k, v in self.own.items() if v["until"] > NOW}
            self.own[name] = record
        elif kind < 0.95:
            store.checkpoint(force=True)
        else:
            store.compact()

    def check(self, store):
        assert store.count() == len(self.docs)
        assert store.last_id() == self.last_id
        assert store.stats().services == len(self.docs)
        with store.scan() as selection:
            assert [doc["service_id"] for doc in selection] == sorted(self.docs)
        after, walked = 0, []
        while True:
            with store.scan(after=after, limit=7) as selection:
                batch = [sid for sid, _ in selection.rows]
            if not batch:
                break
            walked += batch
            after = batch[-1]
        assert walked == sorted(self.docs)
        for due_by in (*DUES, "2026-01-02T00:00:00.000Z", "2025"):
            with store.scan(due_by=due_by) as selection:
                got = [doc["service_id"] for doc in selection]
            assert got == sorted(sid for sid, doc in self.docs.items()
                                 if "due" in doc and doc["due"] <= due_by), due_by
        for n in range(12):
            with store.customer_services(f"C{n}") as selection:
                assert [doc["service_id"] for doc in selection] == sorted(
                    sid for sid, doc in self.docs.items() if doc.get("customer_id") == f"C{n}")
        for n in range(8):
            with store.anonymous_services(f"k{n}") as selection:
                assert [doc["service_id"] for doc in selection] == sorted(
                    sid for sid, doc in self.docs.items()
                    if "customer_id" not in doc and doc.get("contact_key") == f"k{n}")
        for sid in range(1, self.last_id + 2):
            if sid in self.docs:
                assert store.get_service(sid) == self.docs[sid]
            else:
                with pytest.raises(NotFound):
                    store.get_service(sid)
        live = {name: rec for doc in self.docs.values()
                for name, rec in doc.get("requests", {}).items() if rec["until"] > NOW}
        live.update(self.own)
        for n in range(1, self.keys + 1):
            assert store.find_request(RequestKey(f"key{n}", NOW)) == live.get(f"key{n}"), n


def test_stores_sharing_a_file_answer_as_the_file_says_through_checkpoints(tmp_path):
    """Two stores on one file (as two processes), writing in turn, checkpointing,
    compacting and taking up each other's checkpoints, against a model; and a
    third opened on the file at the end."""
    path = tmp_path / "db.json"
    model = Model()
    stores = [open_store(path), open_store(path)]
    try:
        for step in range(600):
            model.write(stores[model.rng.randrange(2)])
            if step % 50 == 49:
                for store in stores:
                    model.check(store)
        for store in stores:
            model.check(store)
        third = open_store(path)
        model.check(third)
        third.close()
    finally:
        for store in stores:
            store.close()
    shutil.copyfile(path, tmp_path / "copy.json")  # read whole: no checkpoint beside it
    whole = open_store(tmp_path / "copy.json", every=10**9)
    assert whole._base is None
    model.check(whole)
    whole.close()


def test_a_store_starts_from_the_checkpoint_and_reads_only_what_follows(tmp_path):
    path = tmp_path / "db.json"
    model = Model(seed=3)
    writer = open_store(path, every=10**9)
    for _ in range(300):
        model.write(writer)
    assert writer.checkpoint(force=True)
    for _ in range(40):
        model.write(writer)
    covered = Checkpoint.load(str(path) + ".idx").point.end
    reader = open_store(path, every=10**9)
    assert reader._base is not None and reader._base.point.end >= covered
    assert len(reader._rows) + len(reader._dead) <= 40  # only the records after it
    model.check(reader)
    writer.close()
    reader.close()


def damaged(path, how):
    """Spoil the checkpoint beside the data file at ``path``."""
    idx = str(path) + ".idx"
    data = bytearray(open(idx, "rb").read())
    if how == "torn":
        data = data[:len(data) // 2]
    elif how == "a byte of its body changed":
        data[len(data) // 2] ^= 1
    elif how == "a byte of its header changed":
        data[40] ^= 1
    elif how == "empty":
        data = bytearray()
    with open(idx, "wb") as out:
        out.write(data)


@pytest.mark.parametrize("how", ["torn", "a byte of its body changed",
                                 "a byte of its header changed", "empty"])
def test_a_damaged_checkpoint_is_refused_and_replaced(tmp_path, how):
    path = tmp_path / "db.json"
    model = Model(seed=5)
    store = open_store(path)
    for _ in range(200):
        model.write(store)
    store.checkpoint(force=True)
    store.close()
    damaged(path, how)
    again = open_store(path, every=10)  # reads the whole file, then writes a new one
    model.check(again)
    assert again._base is not None
    assert Checkpoint.load(str(path) + ".idx") is not None
    again.close()
    third = open_store(path)
    assert len(third._rows) + len(third._dead) < 10
    model.check(third)
    third.close()


def test_a_checkpoint_of_another_file_is_refused(tmp_path):
    one, other = tmp_path / "one.json", tmp_path / "other.json"
    model, theirs = Model(seed=1), Model(seed=2)
    for path, filling in ((one, model), (other, theirs)):
        store = open_store(path)
        for _ in range(150):
            filling.write(store)
        store.checkpoint(force=True)
        store.close()
    shutil.copyfile(str(other) + ".idx", str(one) + ".idx")
    store = open_store(one, every=10**9)
    assert store._base is None
    model.check(store)
    store.close()


def test_a_checkpoint_is_refused_once_an_older_copy_was_put_in_the_files_place(tmp_path):
    """cp older.json db.json (same inode, same header), then writes of the same
    sizes as those the checkpoint saw: every record boundary where it expects
    one, yet other records. Its fingerprint of the file's bytes tells."""
    path = tmp_path / "db.json"

    def fill(letter, count):
        store = open_store(path, every=10**9)
        store.create_services([lambda sid: {"service_id": sid, "customer_id": f"{letter}"}
                               for _ in range(count)])
        return store

    fill("A", 100).close()
    shutil.copyfile(path, tmp_path / "older.json")
    newer = fill("B", 100)
    assert newer.checkpoint(force=True)
    newer.close()
    with open(path, "r+b") as live, open(tmp_path / "older.json", "rb") as copy:
        data = copy.read()
        live.write(data)
        live.truncate(len(data))
    fill("C", 100).close()  # a server started on the older copy wrote these
    store = open_store(path, every=10**9)
    assert store._base is None
    with store.customer_services("C") as selection:
        assert [doc["service_id"] for doc in selection] == list(range(101, 201))
    with store.customer_services("B") as selection:
        assert len(selection) == 0
    store.close()


def test_checkpoints_survive_what_changes_the_file_only_by_appending(tmp_path):
    """A checkpoint stays good while the file grows, and a store on it sees the
    records appended after it by another store (the stale part is the tail)."""
    path = tmp_path / "db.json"
    model = Model(seed=13)
    first = open_store(path, every=10**9)
    for _ in range(100):
        model.write(first)
    first.checkpoint(force=True)
    for _ in range(100):
        model.write(first)
    second = open_store(path, every=10**9)
    for _ in range(100):
        model.write(first)
        model.write(second)
    model.check(first)
    model.check(second)
    first.close()
    second.close()


# ------------------------------------------------------------------ compaction
def test_writes_made_while_a_compaction_copies_the_file_are_all_in_the_new_one(tmp_path,
                                                                              monkeypatch):
    path = tmp_path / "db.json"
    model = Model(seed=17)
    compacting, other = open_store(path, every=10**9), open_store(path, every=10**9)
    for _ in range(400):
        model.write(other)
    writes = iter(range(120))

    def pause():  # the compaction lets requests run: another process writes meanwhile
        if next(writes, None) is not None:
            for _ in range(3):
                model.write(other, upkeep=False)

    monkeypatch.setattr(log, "pause", pause)
    monkeypatch.setattr(log, "CATCH_UP", 1)  # copy all of it outside the exclusive lock
    assert compacting.compact()
    assert next(writes, None) is None, "the compaction paused too seldom to test anything"
    for store in (compacting, other):
        model.check(store)
    fresh = open_store(path)
    model.check(fresh)
    stats, notes = LogFile(str(path)).audit()
    assert stats.services == len(model.docs) and not notes
    json.loads(path.read_bytes())
    with TinyDB(path, access_mode="r") as db:
        docs = {doc.doc_id: doc for doc in db.table("services").all()
                if not doc.get("_deleted") and doc.doc_id}  # 0: the store's own
    assert sorted(docs) == sorted(model.docs)
    for store in (compacting, other, fresh):
        store.close()


def test_a_compaction_that_fails_half_way_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "db.json"
    model = Model(seed=23)
    store = open_store(path, every=10**9)
    for _ in range(300):
        model.write(store, upkeep=False)
    before = path.read_bytes()
    calls = iter(range(3))

    def pause():
        if next(calls, None) is None:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(log, "pause", pause)
    with pytest.raises((OSError, StoreFailure)):  # raised where the file is written
        store.compact()
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["db.json", "db.json.lock", "db.json.rewrite.lock"]
    model.check(store)
    model.check(open_store(path))


def test_a_crash_between_putting_the_file_and_its_checkpoint_in_place(tmp_path, monkeypatch):
    """The new data file is renamed into place first: a crash before its checkpoint
    follows leaves the old file's checkpoint, which the new file refuses."""
    path = tmp_path / "db.json"
    model = Model(seed=29)
    store = open_store(path, every=10**9)
    for _ in range(300):
        model.write(store)
    store.checkpoint(force=True)
    real = os.replace

    def crash(src, dst):
        if dst.endswith(".idx"):
            raise KeyboardInterrupt("the process dies here")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.compact()
    monkeypatch.undo()
    again = open_store(path, every=10**9)
    assert again._base is None
    model.check(again)
    again.close()
