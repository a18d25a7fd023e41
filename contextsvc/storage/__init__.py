"""Persistence. The rest of contextsvc sees only the contract of :mod:`.base`
(:class:`ServiceStore`, :class:`Selection`) and :func:`open_store`.

Engines: ``file`` (the default: a TinyDB JSON file written by appending, shared by
every gunicorn worker; :mod:`.logfile`) and ``memory`` (one process, nothing kept;
:mod:`.memory`), both under the log store of :mod:`.log`. A new engine implements
:class:`ServiceStore`, is named in ``ENGINES`` and :func:`open_store`, and is added
to the ``store`` fixture of ``tests/storage/test_contract.py``.
"""

from __future__ import annotations

from typing import Any

from .base import Selection, ServiceStore
from .log import LogStore
from .logfile import LogFile
from .memory import MemoryLog
from .tinydbfiles import tinydb_snapshot

__all__ = ["ENGINES", "LogFile", "LogStore", "MemoryLog", "Selection", "ServiceStore",
           "open_store", "tinydb_snapshot"]

ENGINES = ("file", "memory")


def open_store(settings: dict[str, Any], path: str | None = None) -> ServiceStore:
    """Open the store the settings describe; ``path`` names another data file for
    the file engine (one per tenant)."""
    storage = settings["storage"]
    if storage["engine"] == "memory":
        engine: LogFile | MemoryLog = MemoryLog()
    else:
        engine = LogFile(path or storage["path"], fsync=storage["fsync"],
                         lock_timeout=storage["lock_timeout"])
    return LogStore(engine, compact_min_bytes=storage["compact_min_bytes"],
                    compact_ratio=storage["compact_ratio"],
                    max_service_bytes=settings["limits"]["max_service_bytes"],
                    lock_timeout=storage["lock_timeout"])
