"""The ``contextsvc`` command (API.md 7.2): the operator's tools, on the same
configuration as the server (``CONTEXTSVC_CONFIG``, the environment, the defaults).

Each subcommand works on a store that a running server is using: it goes through
the store contract like a server process does, so the store's lock and units of
work keep both safe. Subcommands live in the modules of this package, each adding
its commands to :data:`main`; every command added to it takes ``--tenant NAME``
(API.md 8.2), which chooses the tenant whose store it works on.

Exit status: 0 on success; 1 on a failure, explained in one line on stderr
(``contextsvc: error: ...``); 2 on bad usage (click's own).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import click

from .. import __version__, config
from ..domain import tenancy
from ..domain.lifecycle import Policy
from ..domain.timed import Clock, TimedStore, utc_now
from ..errors import ContextError
from ..storage import ServiceStore, open_store

FAILURE = 1


class Failure(click.ClickException):
    """A failure the command explains in one line on stderr, exit status 1."""

    exit_code = FAILURE

    def show(self, file: Any = None) -> None:
        # one line, whatever the message (configparser's span several)
        lines = (line.strip() for line in self.format_message().splitlines())
        click.echo(f"contextsvc: error: {'; '.join(line for line in lines if line)}", err=True)


class Group(click.Group):
    """Turns the domain's and the configuration's errors into one-line failures, and
    gives every command ``--tenant``."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not isinstance(cmd, click.Group):  # (a group's commands have their own)
            cmd.params.append(tenant_option())
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except config.ConfigError as exc:
            raise Failure(f"configuration: {exc}") from None
        except ContextError as exc:
            raise Failure(exc.message) from None
        except OSError as exc:
            name = f": {exc.filename}" if exc.filename else ""
            raise Failure(f"{exc.strerror or exc}{name}") from None


@dataclass
class Context:
    """What every subcommand works from: the settings, and the store they name."""

    settings: dict[str, dict[str, Any]]
    clock: Clock = utc_now
    # the tenant --tenant names (or the default one); None without [tenants]
    tenant: tenancy.Tenant | None = None

    @property
    def policy(self) -> Policy:
        return config.policy(self.settings)

    @property
    def location(self) -> str:
        """Where the store of the command's tenant is (the data file, for the file
        engine)."""
        return self.tenant.store if self.tenant else self.settings["storage"]["path"]

    @property
    def setting(self) -> str:
        """The setting that names :attr:`location`, for messages."""
        return f"[tenants] {self.tenant.name}" if self.tenant else "[storage] path"

    @contextmanager
    def store(self) -> Iterator[ServiceStore]:
        """The store of the command's tenant, opened for the length of the block."""
        store = open_store(self.settings, self.tenant.store if self.tenant else None)
        try:
            yield store
        finally:
            store.close()

    @contextmanager
    def timed_store(self) -> Iterator[TimedStore]:
        """The store as time makes it (API.md 6.3), as a server's requests see it."""
        with self.store() as store:
            yield TimedStore(store, self.policy, self.clock)


pass_context = click.make_pass_decorator(Context)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="contextsvc")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Operate a contextsvc store: export, import, back up, check, compact, purge,
    sweep, and load demo data. Works on the store of the configuration
    (CONTEXTSVC_CONFIG and CONTEXTSVC_* variables), also while a server uses it."""
    try:
        ctx.obj = Context(config.load())
    except config.ConfigError as exc:
        raise Failure(f"configuration: {exc}") from None


def tenant_option() -> click.Option:
    """``--tenant NAME``: the tenant whose store the command works on (API.md 8.2),
    by name or number; without it, the default tenant. Refused when the
    configuration has no tenants, and when it has tenants but no default."""

    def choose(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        context = ctx.find_object(Context)
        if context is None:  # --help
            return
        tenants: tenancy.Tenants = context.settings[config.TENANTS]
        configured = ", ".join(tenants.names())
        if not tenants:
            if value is not None:
                raise click.BadParameter("the configuration has no tenants (no [tenants] "
                                         "section)", ctx, param)
            return
        if value is None:
            if tenants.default is None:
                raise click.UsageError(f"the configuration has tenants ({configured}) and no "
                                       "default: name one with --tenant NAME", ctx)
            value = tenants.default
        tenant = tenants.find(value)
        if tenant is None:
            raise click.BadParameter(f"no tenant {value!r} in [tenants] (tenants: "
                                     f"{configured})", ctx, param)
        context.tenant = tenant

    return click.Option(["--tenant"], metavar="NAME", expose_value=False, callback=choose,
                        help="The tenant whose store to work on, by name or number "
                             "([tenants]); the default tenant when absent.")


def progress(items: Any, length: int | None = None, label: str = "") -> Any:
    """A progress bar on stderr when it is a terminal; nothing when piped. Use it
    as a context manager: it gives ``items`` to iterate, or, with ``items`` None, a
    bar whose ``update(n)`` tells that ``n`` more of ``length`` are done."""
    if not sys.stderr.isatty():
        return _Silent(items)
    return click.progressbar(items, length=length, label=label, file=sys.stderr)


class _Silent:
    def __init__(self, items: Any):
        self.items = items

    def __enter__(self) -> Any:
        return self if self.items is None else self.items

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n_steps: int, current_item: Any = None) -> None:
        return None  # as click's bar, for counts reported rather than iterated


def _register() -> None:
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_register()
