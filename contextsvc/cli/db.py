"""``contextsvc db upgrade``: the database schema of the postgresql engine."""

from __future__ import annotations

import click

from ..storage import open_postgresql
from . import Context, Failure, main, pass_context


@main.group()
def db() -> None:
    """The database of [storage] engine = postgresql."""


@db.command()
@pass_context
def upgrade(ctx: Context) -> None:
    """Create the store's schema ([storage] schema), or bring it to this version.

    Servers do the same when they open the store; this lets an operator do it
    first, with a role allowed to create tables, and servers run with one that is
    not. It is one transaction: servers opening the store meanwhile wait for it.
    Running it again changes nothing.

    Prints "schema: NAME", "version: N" and "was: N" (0 for a new schema).
    """
    storage = ctx.settings["storage"]
    if storage["engine"] != "postgresql":
        raise Failure(f"[storage] engine = {storage['engine']} has no database schema: "
                      "this command is for engine = postgresql")
    store = open_postgresql(ctx.settings, setup=False)
    try:
        before, now = store.upgrade()
    finally:
        store.close()
    click.echo(f"schema: {store.schema}\nversion: {now}\nwas: {before}")
