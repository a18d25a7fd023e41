"""TinyDB and the file store: converting a file written by plain TinyDB, and reading
the live store as a TinyDB without ever seeing a write half done."""

from __future__ import annotations

import os
from typing import Any

from ..errors import StoreCorrupt
from .logfile import LogFile
from .records import STORE_DOC, Location, encode


def import_tinydb_file(engine: LogFile) -> None:
    """A data file written by plain TinyDB (``{"services": {"1": {...}}}``) is
    converted once to the line layout; the original is kept beside it."""
    path = engine.path
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(b'{"_meta": '))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreCorrupt(f"cannot read {path}: {exc.strerror}") from None
    if head == b'{"_meta": ' or head == b"":
        if head == b"":
            os.unlink(path)  # an empty file holds nothing: start afresh
        return
    from tinydb import TinyDB

    try:
        with TinyDB(path, access_mode="r") as db:
            tables = db.tables()
            unexpected = tables - {"services", "_meta", "_default"}
            if unexpected or len(db.table("_default")):
                raise ValueError(f"unexpected tables {sorted(unexpected) or ['_default']}")
            meta = db.table("_meta").get(doc_id=1) or {}
            docs = sorted((doc.doc_id, doc) for doc in db.table("services").all()
                          if not doc.get("_deleted"))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StoreCorrupt(f"{path} is neither a contextsvc store nor a TinyDB file of "
                           f"services ({exc}); not starting, so that it is not overwritten"
                           ) from None
    last_id = max([int(meta.get("last_service_id", 0))] + [sid for sid, _ in docs])
    backup = path + ".tinydb-import.bak"
    if not os.path.exists(backup):
        os.link(path, backup)
    engine.rewrite(((sid, encode({**doc, "service_id": sid})) for sid, doc in docs), last_id)
    engine.forget()  # the store indexes it from the start


def tinydb_snapshot(path: str | os.PathLike[str], lock_timeout: float = 10.0) -> Any:
    """The store at ``path`` as a read-only TinyDB in memory, read under the store's
    shared lock, so that no write is ever seen half done, even while a server runs.
    (Plain ``TinyDB(path)`` is safe only on a file no server is writing.) Deleted
    services are left out."""
    from tinydb import TinyDB
    from tinydb.storages import MemoryStorage

    engine = LogFile(os.fspath(path), lock_timeout=lock_timeout)
    try:
        with engine.locked(False):
            live: dict[int, Location] = {}
            for sid, loc, keys in engine.changes()[1]:
                if sid == STORE_DOC:
                    continue  # the store's own document, not a service
                if keys is None:
                    live.pop(sid, None)
                else:
                    live[sid] = loc
            services = {str(sid): engine.read(loc) for sid, loc in sorted(live.items())}
    finally:
        engine.close()
    db = TinyDB(storage=MemoryStorage)
    db.storage.write({"services": services})
    return db
