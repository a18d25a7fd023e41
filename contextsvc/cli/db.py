"""``contextsvc db upgrade``: the database schema of the postgresql engine."""

from __future__ import annotations

import click

from .. import config
from ..storage import open_postgresql
from . import Context, Failure, main, pass_context


@main.group()
def db() -> None:
    """The database of [storage] engine = postgresql."""


@db.command()
@click.option("--tenant", metavar="NAME",
              help="Only the schema of this tenant ([tenants]); every tenant's when absent.")
@pass_context
def upgrade(ctx: Context, tenant: str | None) -> None:
    """Create the store's schema ([storage] schema, or each tenant's of [tenants]),
    or bring it to this version.

    Servers do the same when they open the store; this lets an operator do it
    first, with a role allowed to create tables, and servers run with one that is
    not. It is one transaction per schema: servers opening the store meanwhile wait
    for it. Running it again changes nothing.

    Prints "schema: NAME", "version: N" and "was: N" (0 for a new schema), for each
    schema.
    """
    storage = ctx.settings["storage"]
    if storage["engine"] != "postgresql":
        raise Failure(f"[storage] engine = {storage['engine']} has no database schema: "
                      "this command is for engine = postgresql")
    tenants = ctx.settings[config.TENANTS]
    if tenant is not None:
        found = tenants.find(tenant) if tenants else None
        if found is None:
            raise click.BadParameter(f"no tenant {tenant!r} in [tenants]"
                                     if tenants else "the configuration has no tenants",
                                     param_hint="--tenant")
        schemas = [found.store]
    else:
        schemas = [t.store for t in tenants] if tenants else [storage["schema"]]
    for n, schema in enumerate(schemas):
        store = open_postgresql(ctx.settings, schema, setup=False)
        try:
            before, now = store.upgrade()
        finally:
            store.close()
        click.echo(("\n" if n else "") + f"schema: {store.schema}\nversion: {now}\nwas: {before}")
