"""``contextsvc export`` and ``contextsvc import`` (API.md 7.2): services out as
NDJSON, one whole service per line, and back in under the ids they carry. The
selection, the form and the way back are those of :mod:`contextsvc.domain.export`,
which the HTTP export stream uses too.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import click

from ..domain import export as exporting
from ..domain import timeutil
from ..storage.base import ON_CONFLICT
from . import Context, Failure, main, pass_context, progress


class TimestampType(click.ParamType):
    """An ISO 8601 date/time, as the API takes it (UTC when it has no zone)."""

    name = "timestamp"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        try:
            return timeutil.normalize(value)
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)


TIMESTAMP = TimestampType()


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


# ================================================================== export
@main.command("export")
@click.option("--from", "time_from", type=TIMESTAMP, metavar="TS",
              help="Services with an event (see --events) on or after this moment "
                   "(ISO 8601, UTC when no zone is given). Default: no lower bound.")
@click.option("--to", "time_to", type=TIMESTAMP, metavar="TS",
              help="...and strictly before this moment. Default: no upper bound (unlike "
                   "the HTTP export, whose time_to defaults to now).")
@click.option("--events", type=click.Choice(exporting.EVENTS), default="any", show_default=True,
              help="The event that must fall in the range: a start or a completion (any), "
                   "the start, or the completion.")
@click.option("--state", type=click.Choice(exporting.STATES), default="any", show_default=True,
              help="Only services active, or completed (inactive), now.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              metavar="FILE", help="Write here instead of stdout. The file appears only "
                                   "once the export is complete.")
@pass_context
def export_command(ctx: Context, time_from: str | None, time_to: str | None, events: str,
                   state: str, output: str) -> None:
    """Export services as NDJSON: one whole service per line (API.md 2.3: fields,
    lifecycle moments, attached data, every state and task), in id order.

    Without --from and --to, every service is exported. Expired services never are;
    auto-completed ones read as completed. The store may be in use by a running
    server: the export reads it in small batches while writes go on, each service
    as it was at one moment. `contextsvc import` reads the output back.

    \b
    Examples:
      contextsvc export -o all.ndjson
      contextsvc export --from 2026-01-01T00:00:00Z --state inactive > done.ndjson
    """
    selector = exporting.Selector(time_from, time_to, events, state)
    with ctx.timed_store() as store:
        total = store.count()
        with _output(output) as out:
            written = 0
            lines = exporting.lines(store, selector, jobs=exporting.processors())
            if output == "-" and sys.stdout.isatty():
                bar_or_not: Any = _Plain(lines)  # a bar would run through the output
            else:
                bar_or_not = progress(lines, length=total, label="exporting")
            with bar_or_not as bar:
                chunk: list[bytes] = []
                for line in bar:
                    if line is not None:
                        chunk.append(line)
                        if len(chunk) >= 256:
                            out.write(b"\n".join(chunk) + b"\n")
                            written += len(chunk)
                            chunk = []
                if chunk:
                    out.write(b"\n".join(chunk) + b"\n")
                    written += len(chunk)
    if _stderr_is_terminal():
        click.echo(f"exported {written} services", err=True)


class _Plain:
    def __init__(self, items: Any):
        self.items = items

    def __enter__(self) -> Any:
        return self.items

    def __exit__(self, *exc: object) -> None:
        return None


class _output:  # noqa: N801 - used as a context manager, like open()
    """stdout, or a temporary file beside FILE renamed to FILE when the export is
    complete (a failed export leaves no partial FILE behind)."""

    def __init__(self, path: str):
        self.path = path
        self.handle: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        if self.path == "-":
            return sys.stdout.buffer
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=os.path.basename(self.path) + ".",
                                            suffix=".part", dir=folder)
        except OSError as exc:
            raise Failure(f"cannot write {self.path}: {exc.strerror}") from None
        self.handle = os.fdopen(fd, "wb", buffering=1 << 20)
        return self.handle

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if self.handle is None:
            try:
                if kind is None:
                    sys.stdout.buffer.flush()
            except BrokenPipeError:
                kind = BrokenPipeError
            if kind is BrokenPipeError:
                _quiet_stdout()
                raise Failure("the output was closed before the export was complete")
            return
        try:
            self.handle.close()
            if kind is None:
                os.chmod(self.tmp, 0o666 & ~_umask())
                os.replace(self.tmp, self.path)
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so that Python's own flush at
    exit does not fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


# ================================================================== import
@main.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--on-conflict", type=click.Choice(ON_CONFLICT), default="fail",
              show_default=True,
              help="When a service of the file has an id that exists in the store: "
                   "import nothing (fail), keep the stored one (skip), or overwrite it "
                   "(replace).")
@pass_context
def import_command(ctx: Context, file: str, on_conflict: str) -> None:
    """Import services from FILE (NDJSON as `contextsvc export` writes it; - reads
    stdin), keeping their ids; new services get ids after them.

    The whole file is checked before anything is written: a line that is not JSON,
    is not a whole service of the representation, repeats an id of another line, or
    has an id outside 1 to 2^53 - 1 refuses the file, with its line number. With
    --on-conflict fail (the default), an id that exists in the store refuses it too:
    nothing is imported. Expiration and auto-complete moments are kept.

    The store may be in use by a running server: services are written in batches,
    each holding the store for a few milliseconds. Ctrl-C stops the import
    between two lines; with fail, what it wrote is removed again.
    """
    with _input(file) as path:
        count = _count_lines(path)
        with ctx.store() as store:
            importer = exporting.Importer(
                store, ctx.policy, ctx.clock(), on_conflict,
                ctx.settings["limits"]["max_service_bytes"])
            with _Interrupts() as interrupts:
                try:
                    with progress(interrupts.between(_lines(path)), length=count,
                                  label="checking ") as lines:
                        checked = importer.check(lines)
                except KeyboardInterrupt:
                    raise Failure("interrupted; nothing was imported") from None
                with progress(interrupts.between(checked.records()), length=len(checked),
                              label="importing") as records:
                    done = importer.load(records, checked)
    if _stderr_is_terminal():
        skipped = f" ({done.skipped} skipped: their ids exist)" if done.skipped else ""
        click.echo(f"imported {done.imported} services{skipped}", err=True)


class _input:  # noqa: N801
    """The path of FILE; stdin is copied to a temporary file first (the import
    counts its lines before it reads them)."""

    def __init__(self, file: str):
        self.file, self.tmp = file, None

    def __enter__(self) -> str:
        if self.file != "-":
            if not os.path.exists(self.file):
                raise Failure(f"no such file: {self.file}")
            return self.file
        fd, self.tmp = tempfile.mkstemp(prefix="contextsvc-import-", suffix=".ndjson")
        with os.fdopen(fd, "wb") as handle:
            shutil.copyfileobj(sys.stdin.buffer, handle, 1 << 20)
        return self.tmp

    def __exit__(self, *exc: object) -> None:
        if self.tmp is not None:
            os.unlink(self.tmp)


class _Interrupts:
    """Ctrl-C (SIGINT) stops the import between two lines, never inside a write to
    the store: the importer then takes back what it wrote (with ``fail``)."""

    def __enter__(self) -> _Interrupts:
        self.asked = False
        self.previous = signal.signal(signal.SIGINT, self._ask)
        return self

    def _ask(self, signum: int, frame: Any) -> None:
        self.asked = True

    def between(self, lines: Iterator[bytes]) -> Iterator[bytes]:
        for line in lines:
            if self.asked:
                raise KeyboardInterrupt
            yield line

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self.previous)


def _lines(path: str) -> Iterator[bytes]:
    with open(path, "rb", buffering=1 << 20) as handle:
        yield from handle


def _count_lines(path: str) -> int:
    count, open_end = 0, False
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
            open_end = not block.endswith(b"\n")
    return count + open_end
