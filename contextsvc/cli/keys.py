"""``contextsvc keys``: API keys (API.md 8.1).

``keys new`` makes a fresh random key and prints it once, with the ``[api_keys]``
line that configures it. The key is stored nowhere: the line holds its SHA-256.
"""

from __future__ import annotations

import click

from .. import config
from ..domain import access, tenancy
from . import Context, Failure, main, pass_context


@main.group("keys")
def keys() -> None:
    """API keys: with at least one key in [api_keys], every request to the API needs
    one (Authorization: Bearer <key>) whose role allows it."""


@keys.command("new")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(access.KEY_ROLES),
              help="read: every GET; write: read and every change; admin: write and "
                   "/maintenance/.")
@click.option("--tenant", "tenants", multiple=True, metavar="T",
              help="A tenant the key may use (repeat for several); all when absent.")
@pass_context
def new(context: Context, name: str, role: str, tenants: tuple[str, ...]) -> None:
    """Make a new key NAME: print it once, and the line to add to [api_keys]."""
    for tenant in tenants:
        if not access.TENANT.fullmatch(tenant):
            raise Failure(f"--tenant {tenant!r}: one tenant name per --tenant, without "
                          "commas or spaces")
    try:  # a line naming a tenant the configuration lacks would stop the server
        tenancy.limit(context.settings[config.TENANTS], tenants)
    except ValueError as exc:
        raise Failure(f"--tenant: {exc}") from None
    key = access.new_key()
    line = access.config_line(name, role, key, tenants)
    try:
        access.parse(name, line.split(" = ", 1)[1])
    except ValueError as exc:
        raise Failure(f"{name}: {exc}") from None
    click.echo(f"Key (shown once; give it to the client, keep it secret):\n\n    {key}\n")
    click.echo(f"Add this line to the [{config.API_KEYS}] section of the configuration, "
               "then restart the server:\n")
    click.echo(f"    [{config.API_KEYS}]\n    {line}\n")
    if name in context.settings[config.API_KEYS]:
        click.echo(f"contextsvc: note: the configuration has a key {name!r} already; this "
                   "line replaces it.", err=True)
    click.echo("Clients send it as: Authorization: Bearer <key>")
