"""Keeping the store: ``backup``, ``check`` and ``compact`` (API.md 7.2).

Each works on the data file of the file engine while servers use it, through the
store's lock like a server process (``check`` without writing anything at all),
or on the schema of the postgresql engine, through the store contract.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import click

from ..storage import backup_store, check_store, open_postgresql
from ..storage.base import Progress
from . import Context, Failure, main, pass_context, progress


def data_file(ctx: Context, doing: str) -> str | None:
    """The data file the configuration names; None for the postgresql engine (a
    database, which the command reaches as servers do). A failure for the memory
    engine (its services live inside a server process, out of reach of this
    command) and when there is no file (rather than creating an empty store)."""
    storage = ctx.settings["storage"]
    if storage["engine"] == "postgresql":
        return None
    if storage["engine"] != "file":
        raise Failure(f"[storage] engine = {storage['engine']} keeps the services inside the "
                      f"server process: there is no store here to {doing}")
    path = ctx.location
    if not os.path.isfile(path):
        raise Failure(f"there is no store at {path} ({ctx.setting})")
    return path


@contextmanager
def meter(label: str) -> Iterator[Progress]:
    """A store's progress callback, ``(done, total)``, drawn as :func:`progress` draws."""
    with ExitStack() as stack:
        bar: Any = None
        shown = 0

        def report(done: int, total: int) -> None:
            nonlocal bar, shown
            if bar is None:
                bar = stack.enter_context(progress(None, length=total, label=label))
            bar.update(done - shown)
            shown = done

        yield report


@main.command()
@click.argument("dest", type=click.Path(dir_okay=True, path_type=str))
@click.option("-f", "--force", is_flag=True, help="Replace DEST if it exists.")
@pass_context
def backup(ctx: Context, dest: str, force: bool) -> None:
    """Copy the store to DEST, while servers use it.

    The copy holds every write acknowledged before the command started. It is a
    data file a server can start on, and that `contextsvc check` accepts; to
    restore it, stop the servers, move it to [storage] path and start them.
    Servers go on serving meanwhile: their writes wait only for the moment the
    point of the copy is fixed, and their compactions cannot tear the copy. Like
    the store, the copy keeps old versions until its next compaction.

    The copy is written beside DEST under a temporary name, flushed to disk, then
    renamed to DEST: a backup that fails or is interrupted leaves no file at DEST.
    An existing DEST is refused unless --force. When DEST is a directory, the copy
    takes the store's file name in it.

    Prints the path of the copy, its services and bytes (see `contextsvc check`).

    With [storage] engine = postgresql, the copy is such a data file too (a file
    engine's server can start on it, `contextsvc import` can load an export of
    it), read in one snapshot of the database: servers do not wait at all. It is
    not a backup of the database: for that, use pg_dump (pg_dump -n SCHEMA).
    """
    path = data_file(ctx, "back up")
    if path is None:
        target = os.path.abspath(os.path.join(dest, f"{ctx.settings['storage']['schema']}.json")
                                 if os.path.isdir(dest) else dest)
        if os.path.lexists(target) and not force:
            raise Failure(f"{dest} exists; use --force to replace it")
        with meter("backup") as report, ctx.store() as store:
            try:
                stats = store.backup(target, overwrite=force, progress=report)
            except FileExistsError:
                raise Failure(f"{dest} exists; use --force to replace it") from None
        click.echo(f"backup: {target}\nservices: {stats.services}\nbytes: {stats.bytes}")
        return
    if os.path.isdir(dest):
        dest = os.path.join(dest, os.path.basename(path))
    target = os.path.abspath(dest)
    real, own = os.path.realpath(target), os.path.realpath(path)
    if ((os.path.exists(target) and os.path.samefile(target, path))
            or (real.startswith(own + ".") and real.endswith((".lock", ".tmp")))):
        raise Failure(f"{dest} is a file of the store itself; back up to another name")
    if os.path.lexists(target) and not force:
        raise Failure(f"{dest} exists; use --force to replace it")
    with meter("backup") as report:
        try:
            stats = backup_store(ctx.settings, target, overwrite=force, path=path,
                                 progress=report)
        except FileExistsError:
            raise Failure(f"{dest} exists; use --force to replace it") from None
    click.echo(f"backup: {target}\nservices: {stats.services}\nbytes: {stats.bytes}")


@main.command()
@pass_context
def check(ctx: Context) -> None:
    """Verify the store, changing nothing.

    Reads the data file as a server does when it starts, then parses every record
    in full: the file must be a contextsvc store (the format the server writes),
    each record a JSON document filed under its own service id and indexed under
    the keys it holds, nothing but padding after the closing line, and no records
    cut off. It writes nothing, not even the lock file, so it works on a file it
    may not write; servers go on serving meanwhile (their writes wait only while
    it finds where the records end).

    \b
    Prints, one per line:
      store: PATH
      services: N      services stored
      bytes: N         bytes the records take (the file also reserves room
                       for the next writes)
      reclaimable: N   of those, bytes of old versions and deleted services
                       that the next compaction frees (`contextsvc compact`
                       frees them now)
    and a "note:" line for what a server repairs by itself, such as a write
    interrupted by a crash (never an acknowledged one).

    A damaged store exits with status 1 and the damage in one line on stderr.

    With [storage] engine = postgresql (PostgreSQL checks its own pages), it
    checks, in one snapshot and writing nothing, that the schema is at this
    version's (see `contextsvc db upgrade`), that each row holds its own service's
    document, and that the counters behind these figures agree with the rows; the
    bytes are those of the documents, and reclaimable what the next compaction
    forgets (see `contextsvc compact`).
    """
    path = data_file(ctx, "check")
    if path is None:
        store = open_postgresql(ctx.settings, setup=False)
        try:
            stats, notes = store.audit()
            where = store.describe()
        finally:
            store.close()
        path = where
    else:
        with meter("check") as report:
            stats, notes = check_store(ctx.settings, path, progress=report)
    click.echo(f"store: {path}\nservices: {stats.services}\nbytes: {stats.bytes}\n"
               f"reclaimable: {stats.reclaimable}")
    for note in notes:
        click.echo(f"note: {note}")


@main.command()
@pass_context
def compact(ctx: Context) -> None:
    """Reclaim the space of old versions and deleted services now.

    Rewrites the data file with only the newest version of each service, as a
    server does by itself once old versions outweigh the live data ([storage]
    compact_ratio and compact_min_bytes). Servers go on using the store; the
    rewrite is a unit of work that their requests wait for, a second or two per
    100 MB (one that waits longer than [storage] lock_timeout answers 503 and may
    be retried), so on a large store prefer a quiet moment. Nothing is rewritten
    when nothing can be reclaimed.

    Prints the services, and the bytes the records take before and after (see
    `contextsvc check`).

    With [storage] engine = postgresql, it runs a plain VACUUM (ANALYZE) of the
    store's tables, which makes the space of old row versions reusable and holds
    up no request (PostgreSQL's autovacuum does the same by its own rules; the
    files do not shrink, as only VACUUM FULL, which locks the tables, would do),
    and forgets the bytes counted as reclaimable.
    """
    data_file(ctx, "compact")
    with ctx.store() as store:
        before = store.stats()
        if before.reclaimable:
            store.compact()
        after = store.stats()
    click.echo(f"services: {after.services}\nbytes before: {before.bytes}\n"
               f"bytes after: {after.bytes}")
