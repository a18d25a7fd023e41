"""Settings: built-in defaults, then the INI file named by ``CONTEXTSVC_CONFIG``,
then ``CONTEXTSVC_<SECTION>_<KEY>`` environment variables, then ``test_config``.

``config.example.ini`` documents every key.

A setting that cannot be used stops the start with a :class:`ConfigError` whose
message names where the value came from (the file, or the environment variable),
the key, and what was expected. A ``CONTEXTSVC_*`` environment variable that names
no setting is such an error too (a misspelt ``CONTEXTSVC_STORAGE_PATHH`` would
otherwise be ignored, and the server would use the default path): only
``CONTEXTSVC_CONFIG`` and the ``CONTEXTSVC_<SECTION>_<KEY>`` of :data:`SCHEMA`
exist. Retention per service type (``[expiration]``) has no environment form:
service types keep their case and may hold characters that variable names cannot,
so ``CONTEXTSVC_EXPIRATION_*`` is refused with a message saying so. API keys
(``[api_keys]``) have none either: they are set in the file, next to the rest of
the deployment's configuration, and ``CONTEXTSVC_API_KEYS_*`` is refused likewise;
so are ``CONTEXTSVC_TENANTS_*`` (``[tenants]``: tenant names keep their case).

The server stops on such an error with one line, ``contextsvc: error:
configuration: ...``, and exit status :data:`EXIT_CONFIG` (see
:mod:`contextsvc.gunicorn_conf` and ``wsgi.py``); the ``contextsvc`` command
prints the same line and exits 1, like its other failures.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from .domain import access, tenancy
from .domain.lifecycle import Policy, parse_duration
from .storage import ENGINES

# EX_CONFIG of sysexits.h: the server's exit status on a configuration error.
# Fixed, so that a supervisor can tell it from a crash and not restart in a loop
# (systemd: RestartPreventExitStatus=78, docs/systemd/contextsvc.service).
EXIT_CONFIG = 78

CONFIG_VARIABLE = "CONTEXTSVC_CONFIG"
ENV_PREFIX = "CONTEXTSVC_"

# section -> key -> (default, type)
SCHEMA: dict[str, dict[str, tuple[Any, type | str]]] = {
    "server": {
        # read by contextsvc/gunicorn_conf.py; gunicorn's -b and -w win over them
        "bind": ("127.0.0.1:8080", "addresses"),
        "workers": (4, int),
    },
    "storage": {
        "path": (os.path.join("data", "contextsvc.json"), str),
        "engine": ("file", str),
        "fsync": (True, bool),
        "lock_timeout": (10.0, float),
        "compact_min_bytes": (16 * 1024 * 1024, int),
        "compact_ratio": (2.0, float),
        # engine = postgresql only
        "dsn": ("", str),
        "schema": ("contextsvc", str),
        "pool_min": (1, int),
        "pool_max": (10, int),
        "statement_timeout": (30.0, float),
    },
    "limits": {
        "max_body_bytes": (1024 * 1024, int),
        "max_depth": (32, int),
        "max_keys": (1000, int),
        "max_key_length": (256, int),
        "max_string_length": (65536, int),
        "max_service_bytes": (16 * 1024 * 1024, int),
    },
    "logging": {
        "level": ("info", str),
    },
    "lifecycle": {
        "expiration": ("", "duration"),
        "auto_complete_after": ("", "duration"),
        "sweep_interval": ("1m", "duration"),
        "server_sweeps": (True, bool),
    },
    "idempotency": {
        "retention": ("24h", "duration"),
    },
    "http": {
        "cors_origins": ("", "origins"),
    },
}
# [expiration]: one key per service type (case kept), a duration each; INI only
PER_TYPE = "expiration"
# [api_keys]: one key per API key name, "<role> <sha256 hex> [<tenant>,...]" each;
# INI only
API_KEYS = "api_keys"
# [tenants]: "<name> = <store>", "<name>.id = <number>", "default = <name>"; INI only
TENANTS = "tenants"
DYNAMIC = (PER_TYPE, API_KEYS, TENANTS)
# an origin as browsers send it: scheme://host[:port], nothing after
_ORIGIN = re.compile(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")

LEVELS = ("debug", "info", "warning", "error")

# gunicorn's bind forms: HOST:PORT, [IPV6]:PORT (tcp:// allowed), unix:PATH, fd://N
_ADDRESS = re.compile(r"(?:tcp://)?(?:\[[0-9A-Fa-f:.]+\]|[^\s\[\]:/,]+):(\d{1,5})"
                      r"|unix:\S+|fd://\d+")


class ConfigError(Exception):
    """A configuration value cannot be used."""


def error_line(exc: ConfigError) -> str:
    """The one line that reports ``exc``, for the server and the command alike."""
    return f"contextsvc: error: configuration: {exc}"


def exit_on(exc: ConfigError, status: int = EXIT_CONFIG) -> NoReturn:
    """Stop the process: ``exc`` in one line on stderr, exit ``status``."""
    print(error_line(exc), file=sys.stderr, flush=True)
    raise SystemExit(status)


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def _convert(where: str, raw: Any, kind: type | str) -> Any:
    if kind == "origins":
        if isinstance(raw, (list, tuple)):
            raw = ",".join(raw)
        origins = tuple(o.strip() for o in str(raw).split(",") if o.strip())
        for origin in origins:
            if not _ORIGIN.fullmatch(origin):
                raise ConfigError(f"{where}: {origin!r} is not an origin: "
                                  "scheme://host[:port], e.g. https://app.example.com")
        return origins
    if kind == "duration":
        if raw is None or isinstance(raw, int):
            return raw  # seconds already (test settings)
        try:
            return parse_duration(str(raw))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if kind == "addresses":
        if isinstance(raw, (list, tuple)):
            raw = " ".join(raw)
        addresses = [a for a in re.split(r"[\s,]+", str(raw)) if a]
        for address in addresses:
            match = _ADDRESS.fullmatch(address)
            if match is None or (match.group(1) is not None
                                 and not 0 < int(match.group(1)) < 65536):
                raise ConfigError(f"{where}: expected HOST:PORT, [IPV6]:PORT, unix:PATH or "
                                  f"fd://N (several separated by spaces), got {address!r}")
        if not addresses:
            raise ConfigError(f"{where}: expected HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N")
        return addresses
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {raw!r}")
    try:
        value = kind(raw)  # type: ignore[operator]
    except (TypeError, ValueError):
        expected = {int: "an integer", float: "a number"}.get(kind, kind)  # type: ignore[call-overload]
        raise ConfigError(f"{where}: expected {expected}, got {raw!r}") from None
    if kind in (int, float) and value <= 0:
        raise ConfigError(f"{where}: must be positive, got {raw!r}")
    return value


def _read_ini(ini_path: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # service types keep their case
    try:
        with open(ini_path, encoding="utf-8") as handle:
            parser.read_file(handle)
        values = {s: dict(parser[s]) for s in parser.sections()}  # interpolates %(name)s
    except OSError as exc:
        raise ConfigError(f"cannot read {CONFIG_VARIABLE}={ini_path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {ini_path}: not UTF-8 text") from None
    except configparser.Error as exc:
        message = " ".join(str(exc).split())  # configparser's messages span lines
        raise ConfigError(f"cannot parse {ini_path}: {message}") from None
    for section in values:
        if section in DYNAMIC:
            continue
        if section not in SCHEMA:
            raise ConfigError(f"{ini_path}: unknown section [{section}] (known: "
                              f"{', '.join(f'[{s}]' for s in (*SCHEMA, *DYNAMIC))})")
        for key in values[section]:
            if key not in SCHEMA[section]:
                raise ConfigError(f"{ini_path}: unknown key {key!r} in [{section}] (known: "
                                  f"{', '.join(SCHEMA[section])})")
    return values


def _read_environ(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    known = {env_name(section, key): (section, key)
             for section, keys in SCHEMA.items() for key in keys}
    layer: dict[str, dict[str, str]] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_VARIABLE:
            continue
        if name in known:
            section, key = known[name]
            layer.setdefault(section, {})[key] = environ[name]
        elif name.startswith(env_name(PER_TYPE, "")):
            raise ConfigError(f"{name}: retention per service type has no environment "
                              f"form; set it in the [{PER_TYPE}] section of the file named "
                              f"by {CONFIG_VARIABLE}")
        elif name.startswith(env_name(API_KEYS, "")):
            raise ConfigError(f"{name}: API keys have no environment form; set them in the "
                              f"[{API_KEYS}] section of the file named by {CONFIG_VARIABLE}")
        elif name.startswith(env_name(TENANTS, "")):
            raise ConfigError(f"{name}: tenants have no environment form; set them in the "
                              f"[{TENANTS}] section of the file named by {CONFIG_VARIABLE}")
        else:
            close = difflib.get_close_matches(name, [*known, CONFIG_VARIABLE], n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"{name}: the environment variable names no setting ({hint}"
                              f"settings are {ENV_PREFIX}<SECTION>_<KEY>, as in "
                              "config.example.ini)")
    return layer


def load(test_config: Mapping[str, Mapping[str, Any]] | None = None,
         environ: Mapping[str, str] | None = None, *,
         import_engine: bool = True) -> dict[str, dict[str, Any]]:
    """Return the settings as ``{section: {key: value}}``. With ``import_engine``
    false, the settings of the postgresql engine that need its driver (psycopg) to
    be checked are left unchecked, and psycopg is not imported (for gunicorn's
    master: see contextsvc/gunicorn_conf.py)."""
    environ = os.environ if environ is None else environ
    # each layer: its values, and how to name the source of one of them in a message
    layers: list[tuple[Mapping[str, Mapping[str, Any]], Callable[[str, str], str]]] = []

    ini_path = environ.get(CONFIG_VARIABLE)
    if ini_path:
        layers.append((_read_ini(ini_path),
                       lambda section, key: f"{ini_path}: [{section}] {key}"))
    layers.append((_read_environ(environ), env_name))
    if test_config:
        layers.append((test_config, lambda section, key: f"[{section}] {key}"))

    settings = {s: {k: default for k, (default, _) in keys.items()} for s, keys in SCHEMA.items()}
    for section, keys in SCHEMA.items():
        for key, (default, kind) in keys.items():
            if isinstance(kind, str):
                settings[section][key] = _convert(f"[{section}] {key}", default, kind)
    source = {(s, k): f"[{s}] {k}" for s, keys in SCHEMA.items() for k in keys}
    settings[PER_TYPE] = {}
    keys: dict[str, access.ApiKey] = {}
    key_source: dict[str, str] = {}
    tenant_lines: dict[str, tuple[str, str]] = {}  # key -> (value, where it was set)
    for layer, where in layers:
        for section, values in layer.items():
            if section == TENANTS:
                for key, raw in values.items():
                    tenant_lines[key] = (str(raw), where(section, key))
                continue
            if section == API_KEYS:
                for name, raw in values.items():
                    try:
                        keys[name] = access.parse(name, raw)
                        key_source[name] = where(section, name)
                    except ValueError as exc:
                        raise ConfigError(f"{where(section, name or '(no name)')}: {exc}"
                                          ) from None
                continue
            if section == PER_TYPE:
                for key, raw in values.items():
                    seconds = _convert(where(section, key), raw, "duration")
                    if seconds is None:
                        raise ConfigError(f"{where(section, key)}: a duration is required")
                    settings[PER_TYPE][key] = seconds
                continue
            for key, raw in values.items():
                if section not in SCHEMA or key not in SCHEMA[section]:
                    raise ConfigError(f"unknown setting [{section}] {key}")
                settings[section][key] = _convert(where(section, key), raw,
                                                  SCHEMA[section][key][1])
                source[section, key] = where(section, key)
    if settings["logging"]["level"].lower() not in LEVELS:
        raise ConfigError(f"{source['logging', 'level']}: expected one of {', '.join(LEVELS)}, "
                          f"got {settings['logging']['level']!r}")
    if settings["storage"]["engine"] not in ENGINES:
        raise ConfigError(f"{source['storage', 'engine']}: expected one of "
                          f"{', '.join(ENGINES)}, got {settings['storage']['engine']!r}")
    if settings["storage"]["engine"] == "postgresql" and import_engine:
        _check_postgresql(settings["storage"], source)
    if not settings["lifecycle"]["sweep_interval"]:
        raise ConfigError(f"{source['lifecycle', 'sweep_interval']}: a duration is required")
    if not settings["idempotency"]["retention"]:
        raise ConfigError(f"{source['idempotency', 'retention']}: a duration is required")
    settings["storage"]["path"] = os.path.abspath(settings["storage"]["path"])
    settings[TENANTS] = _tenants(tenant_lines, settings["storage"]["engine"], import_engine)
    settings[API_KEYS] = _checked_keys(keys, key_source, settings[TENANTS])
    return settings


def _tenants(lines: dict[str, tuple[str, str]], engine: str,
             import_engine: bool = True) -> tenancy.Tenants:
    """``[tenants]``, with the data files of the file engine as absolute paths, each
    in a directory that exists and none shared by two tenants (their services
    would mix, and ids would be handed out twice)."""
    try:
        tenants = tenancy.parse({key: value for key, (value, _) in lines.items()})
    except ValueError as exc:
        key, _, message = str(exc).partition(": ")
        where = lines[key][1] if key in lines else f"[{TENANTS}] {key}"
        raise ConfigError(f"{where}: {message}") from None
    if engine == "postgresql":
        # (its schema names are checked by the engine's module, which imports
        # psycopg: not in gunicorn's master, see load)
        return _tenant_schemas(tenants, lines) if tenants and import_engine else tenants
    if engine != "file":
        return tenants
    found: dict[str, str] = {}
    by_name = {}
    for tenant in tenants:
        where = lines[tenant.name][1]
        path = os.path.abspath(tenant.store)
        folder = os.path.dirname(path)
        if not os.path.isdir(folder):
            raise ConfigError(f"{where}: the directory {folder} does not exist")
        if os.path.isdir(path):
            raise ConfigError(f"{where}: {path} is a directory; name the tenant's data file")
        real = os.path.realpath(path)
        if real in found:
            raise ConfigError(f"{where}: {path} is the data file of {found[real]} too; each "
                              "tenant needs a file of its own")
        found[real] = tenant.name
        by_name[tenant.name] = dataclasses.replace(tenant, store=path)
    return tenancy.Tenants(by_name, tenants.default)


def _tenant_schemas(tenants: tenancy.Tenants, lines: dict[str, tuple[str, str]]
                    ) -> tenancy.Tenants:
    """For the postgresql engine a tenant's store is a schema of the database: a
    name the engine accepts, of this tenant only."""
    from .storage import postgresql

    found: dict[str, str] = {}
    for tenant in tenants:
        where = lines[tenant.name][1]
        try:
            postgresql.check_schema_name(tenant.store)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if tenant.store in found:
            raise ConfigError(f"{where}: the schema {tenant.store} is the store of "
                              f"{found[tenant.store]} too; each tenant needs a schema of its own")
        found[tenant.store] = tenant.name
    return tenants


def _check_postgresql(storage: dict[str, Any], source: dict[tuple[str, str], str]) -> None:
    """The settings of the postgresql engine, which is imported only when named."""
    try:
        from .storage import postgresql
    except ImportError as exc:
        raise ConfigError(f"{source['storage', 'engine']}: postgresql needs psycopg, which "
                          f"is not installed ({exc}): pip install 'contextsvc[postgresql]'"
                          ) from None
    for key, check in (("dsn", postgresql.check_dsn), ("schema", postgresql.check_schema_name)):
        try:
            check(storage[key])
        except ValueError as exc:
            raise ConfigError(f"{source['storage', key]}: {exc}") from None
    if storage["pool_max"] < storage["pool_min"]:
        raise ConfigError(f"{source['storage', 'pool_max']}: must be at least [storage] "
                          f"pool_min ({storage['pool_min']}), got {storage['pool_max']}")


def _checked_keys(keys: dict[str, access.ApiKey], source: dict[str, str],
                  tenants: tenancy.Tenants) -> dict[str, access.ApiKey]:
    """``[api_keys]``, refusing one key configured under two names (the log would
    name either), and a key limited to tenants that are not configured; the
    tenants a key lists (by name or number) are kept as names."""
    names: dict[bytes, str] = {}
    checked = {}
    for name, key in keys.items():
        if key.digest in names:
            raise ConfigError(f"{source[name]}: the same key as {names[key.digest]}")
        names[key.digest] = name
        if key.tenants is not None:
            try:
                key = dataclasses.replace(key, tenants=tenancy.limit(tenants, key.tenants))
            except ValueError as exc:
                raise ConfigError(f"{source[name]}: {exc}") from None
        checked[name] = key
    return checked


def policy(settings: Mapping[str, Mapping[str, Any]]) -> Policy:
    """The lifecycle rules the settings configure."""
    return Policy(expiration=settings["lifecycle"]["expiration"],
                  by_type=dict(settings[PER_TYPE]),
                  auto_complete_after=settings["lifecycle"]["auto_complete_after"])
