"""Persistence. The rest of contextsvc sees only the contract of :mod:`.base`
(:class:`ServiceStore`, :class:`Selection`) and :func:`open_store`.

Engines: ``file`` (the default: a TinyDB JSON file written by appending, shared by
every gunicorn worker; :mod:`.logfile`) and ``memory`` (one process, nothing kept;
:mod:`.memory`), both under the log store of :mod:`.log`. A new engine implements
:class:`ServiceStore`, is named in ``ENGINES`` and :func:`open_store`, and is added
to the ``store`` fixture of ``tests/storage/test_contract.py``.

``postgresql`` (:mod:`.postgresql`) keeps the services in a PostgreSQL database,
for several app servers on one database; it needs the ``postgresql`` extra
(psycopg), imported only when the configuration names the engine.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

from .base import Progress, Selection, ServiceStore, StoreStats
from .log import LogStore
from .logfile import LogFile
from .memory import MemoryLog
from .tinydbfiles import tinydb_snapshot

if TYPE_CHECKING:
    from .postgresql import PostgresStore

__all__ = ["ENGINES", "LogFile", "LogStore", "MemoryLog", "Selection", "ServiceStore",
           "StoreStats", "backup_store", "check_store", "open_store", "tinydb_snapshot"]

ENGINES = ("file", "memory", "postgresql")


def open_store(settings: dict[str, Any], path: str | None = None) -> ServiceStore:
    """Open the store the settings describe; ``path`` names another data file for
    the file engine (one per tenant), another schema for the postgresql engine."""
    storage = settings["storage"]
    if storage["engine"] == "postgresql":
        return open_postgresql(settings, path)
    if storage["engine"] == "memory":
        engine: LogFile | MemoryLog = MemoryLog()
    else:
        engine = LogFile(path or storage["path"], fsync=storage["fsync"],
                         lock_timeout=storage["lock_timeout"])
    return LogStore(engine, compact_min_bytes=storage["compact_min_bytes"],
                    compact_ratio=storage["compact_ratio"],
                    max_service_bytes=settings["limits"]["max_service_bytes"],
                    lock_timeout=storage["lock_timeout"])


def open_postgresql(settings: dict[str, Any], schema: str | None = None, *,
                    setup: bool = True) -> PostgresStore:
    """The postgresql engine's store on ``schema`` (by default ``[storage] schema``);
    without ``setup``, it neither creates nor upgrades the schema."""
    from .postgresql import PostgresStore  # psycopg only for this engine

    storage = settings["storage"]
    return PostgresStore(storage["dsn"], schema or storage["schema"],
                         pool_min=storage["pool_min"], pool_max=storage["pool_max"],
                         lock_timeout=storage["lock_timeout"],
                         statement_timeout=storage["statement_timeout"],
                         compact_min_bytes=storage["compact_min_bytes"],
                         compact_ratio=storage["compact_ratio"],
                         max_service_bytes=settings["limits"]["max_service_bytes"],
                         setup=setup)


def check_store(settings: dict[str, Any], path: str | None = None,
                progress: Progress | None = None) -> tuple[StoreStats, list[str]]:
    """Verify the data file of the file engine that the settings (or ``path``) name,
    and return its figures, with notes on what a server repairs by itself (a write
    interrupted by a crash). Raises ``StoreCorrupt`` naming the damage, and
    ``FileNotFoundError`` when there is no file.

    It does not open the store: opening may write (a server converts a plain TinyDB
    file, blanks a torn write, notes where the records end), and this writes
    nothing at all, so it also works on a file it may not write, while servers use
    it (see :meth:`LogFile.audit`)."""
    path = os.path.abspath(path or settings["storage"]["path"])
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    engine = LogFile(path, lock_timeout=settings["storage"]["lock_timeout"])
    try:
        return engine.audit(progress)
    finally:
        engine.close()


def backup_store(settings: dict[str, Any], dest: str, overwrite: bool = False,
                 path: str | None = None, progress: Progress | None = None) -> StoreStats:
    """Back up the data file of the file engine that the settings (or ``path``) name
    to ``dest``, as :meth:`ServiceStore.backup` does, without opening the store:
    opening reads the whole file under the exclusive lock, which holds up every
    request of a large store for as long; this holds the shared lock only while it
    finds where the records end (see :meth:`LogFile.backup`). Returns the figures
    of the copy. Raises ``FileNotFoundError`` when there is no file."""
    path = os.path.abspath(path or settings["storage"]["path"])
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    engine = LogFile(path, lock_timeout=settings["storage"]["lock_timeout"])
    try:
        return engine.backup(dest, overwrite, progress)
    finally:
        engine.close()
