"""Lifecycle housekeeping on demand: ``purge`` (API.md 6.4) and ``sweep`` (6.3).

Both call the functions the server uses (``POST /maintenance/purge``, each
worker's sweeper) with the same configuration, so a command and a server decide
alike; like the server, they work in batches that are each one unit of work.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click
from marshmallow import ValidationError

from ..domain import fields, housekeeping
from ..domain.events import PURGE_OPERATIONS
from ..storage import ServiceStore
from . import Context, Failure, main, pass_context, progress
from .store import data_file

WAIT_STEP = 0.2  # seconds between looks at a sweep another process is running


class Timestamp(click.ParamType):
    """A timestamp as the API takes it (ISO 8601; UTC when it names no zone)."""

    name = "timestamp"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> str:
        try:
            return fields.Timestamp().deserialize(value)
        except ValidationError as exc:
            self.fail(" ".join(map(str, exc.messages)), param, ctx)


class _Walked:
    """The store, telling a progress bar how many services each batch of a walk
    reads (housekeeping walks the store with ``scan``)."""

    def __init__(self, store: ServiceStore, bar: Any):
        self._store, self._bar = store, bar

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def scan(self, after: int = 0, limit: int | None = None, due_by: str | None = None
             ) -> Any:
        selection = self._store.scan(after=after, limit=limit, due_by=due_by)
        self._bar.update(len(selection))
        return selection


@main.command()
@click.option("--limit", required=True, type=Timestamp(), metavar="TS",
              help="Purge services started before this moment: ISO 8601, such as "
                   "2026-01-31T00:00:00.000Z (UTC when no zone is given).")
@click.option("--operation", required=True, type=click.Choice(PURGE_OPERATIONS),
              metavar="OP", help="Which of those services to purge (see above).")
@pass_context
def purge(ctx: Context, limit: str, operation: str) -> None:
    """Remove the services started before TS that OP selects (API.md 6.4).

    \b
    OP is one of:
      purge.service.all                   any
      purge.service.started               still active
      purge.service.started.anonymous     still active and anonymous
      purge.service.completed             completed
      purge.service.completed.anonymous   completed and anonymous
    (anonymous: without a customer_id).

    The same purge as POST /maintenance/purge, on the same configuration: each
    service is judged as it is now (an expired one is gone already, an idle one
    past its auto-complete deadline is completed). Servers go on serving: the
    store is walked in batches, each one unit of work in which every service is
    judged again, so a write made meanwhile is never lost or undone; once done,
    the space is reclaimed when enough was removed. Removed services are gone for
    good, and their ids are never handed out again.

    Prints "purged: N". A TS that is not a timestamp, or an unknown OP, is bad
    usage (exit status 2). File and postgresql engines.
    """
    data_file(ctx, "purge")
    with ctx.store() as store:
        with progress(None, length=store.count(), label="purge") as bar:
            purged = housekeeping.purge(_Walked(store, bar), limit, operation, ctx.policy,
                                        ctx.clock())
    click.echo(f"purged: {purged}")


@main.command()
@click.option("--full", is_flag=True,
              help="Read every service, not only those the store's index says are due; "
                   "also records the due moment of services written before the server "
                   "kept it, or under another configuration (servers do this once a day).")
@pass_context
def sweep(ctx: Context, full: bool) -> None:
    """Write down now what time has decided (API.md 6.3).

    Removes the services that have expired and stores the auto-completions that
    are due, as the servers do by themselves every [lifecycle] sweep_interval,
    with the same configuration ([lifecycle], [expiration]). Clients see no
    difference: time, not the sweep, decides what they see; the sweep frees
    the space (compacting once enough was removed).

    One sweep runs at a time across the deployment: when a server is sweeping,
    this command waits for it to finish, then sweeps what is left, so everything
    due when the command started is written down when it ends. Servers go on
    serving meanwhile (the sweep works in batches, each one unit of work), and
    this sweep counts as the deployment's sweep for the next interval.

    Prints "removed: N" (expired services removed) and "auto-completed: N".
    File and postgresql engines.
    """
    path = data_file(ctx, "sweep")
    for name in (path, os.path.dirname(path)) if path is not None else ():
        if not os.access(name, os.W_OK):
            raise Failure(f"cannot write {name}: a sweep writes to the store")
    with ctx.store() as store:
        told = False
        while True:
            with store.periodic("sweep", 0) as mine:
                if mine:
                    if full:  # the servers' daily refresh, now, then the sweep
                        with store.periodic("refresh", 0), \
                                progress(None, length=store.count(), label="refresh") as bar:
                            housekeeping.refresh(_Walked(store, bar), ctx.policy, now=ctx.clock())
                    swept = housekeeping.sweep(store, ctx.policy, ctx.clock())
                    break
            if not told and sys.stderr.isatty():
                click.echo("contextsvc: a server is sweeping the store; waiting for it",
                           err=True)
                told = True
            time.sleep(WAIT_STEP)
    click.echo(f"removed: {swept.removed}\nauto-completed: {swept.completed}")
