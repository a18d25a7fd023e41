"""Settings: built-in defaults, then the INI file named by ``CONTEXTSVC_CONFIG``,
then ``CONTEXTSVC_<SECTION>_<KEY>`` environment variables, then ``test_config``.

``config.example.ini`` documents every key.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Mapping
from typing import Any

from .domain import access
from .domain.lifecycle import Policy, parse_duration
from .storage import ENGINES

# section -> key -> (default, type)
SCHEMA: dict[str, dict[str, tuple[Any, type | str]]] = {
    "storage": {
        "path": (os.path.join("data", "contextsvc.json"), str),
        "engine": ("file", str),
        "fsync": (True, bool),
        "lock_timeout": (10.0, float),
        "compact_min_bytes": (16 * 1024 * 1024, int),
        "compact_ratio": (2.0, float),
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
    },
    "http": {
        "cors_origins": ("", "origins"),
    },
}
# [expiration]: one key per service type (case kept), a duration each
PER_TYPE = "expiration"
# [api_keys]: one key per API key name, "<role> <sha256 hex> [<tenant>,...]" each;
# in the file only (no environment variables), like [expiration]
API_KEYS = "api_keys"
# an origin as browsers send it: scheme://host[:port], nothing after
_ORIGIN = re.compile(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")

LEVELS = ("debug", "info", "warning", "error")



class ConfigError(Exception):
    """A configuration value cannot be used."""


def _origins(raw: Any) -> tuple[str, ...]:
    """``[http] cors_origins``: a comma-separated list of exact origins."""
    if isinstance(raw, (list, tuple)):
        raw = ",".join(raw)
    origins = tuple(o.strip() for o in str(raw).split(",") if o.strip())
    for origin in origins:
        if not _ORIGIN.fullmatch(origin):
            raise ConfigError(f"[http] cors_origins: {origin!r} is not an origin: "
                              "scheme://host[:port], e.g. https://app.example.com")
    return origins


def _api_keys(values: Mapping[str, Any], keys: dict[str, access.ApiKey]) -> None:
    """Add the keys of one layer's ``[api_keys]`` to ``keys``."""
    for name, raw in values.items():
        try:
            keys[name] = access.parse(name, raw)
        except ValueError as exc:
            raise ConfigError(f"[{API_KEYS}] {name or '(no name)'}: {exc}") from None


def _convert(section: str, key: str, raw: Any, kind: type | str) -> Any:
    if kind == "origins":
        return _origins(raw)
    if kind == "duration":
        if raw is None or isinstance(raw, int):
            return raw  # seconds already (test settings)
        try:
            return parse_duration(str(raw))
        except ValueError as exc:
            raise ConfigError(f"[{section}] {key}: {exc}") from None
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"[{section}] {key}: expected true or false, got {raw!r}")
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"[{section}] {key}: expected {kind.__name__}, got {raw!r}"  # type: ignore[union-attr]
                          ) from None
    if kind in (int, float) and value <= 0:
        raise ConfigError(f"[{section}] {key}: must be positive, got {raw!r}")
    return value


def load(test_config: Mapping[str, Mapping[str, Any]] | None = None,
         environ: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Return the settings as ``{section: {key: value}}``."""
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, Mapping[str, Mapping[str, Any]]]] = []

    ini_path = environ.get("CONTEXTSVC_CONFIG")
    if ini_path:
        parser = configparser.ConfigParser()
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # service types keep their case
        try:
            with open(ini_path, encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read CONTEXTSVC_CONFIG={ini_path}: {exc.strerror}") from None
        except configparser.Error as exc:
            raise ConfigError(f"cannot parse {ini_path}: {exc}") from None
        for section in parser.sections():
            if section in (PER_TYPE, API_KEYS):
                continue
            if section not in SCHEMA:
                raise ConfigError(f"{ini_path}: unknown section [{section}]")
            for key in parser[section]:
                if key not in SCHEMA[section]:
                    raise ConfigError(f"{ini_path}: unknown key {key!r} in [{section}]")
        layers.append(("ini", {s: dict(parser[s]) for s in parser.sections()}))

    env_layer: dict[str, dict[str, str]] = {}
    for section, keys in SCHEMA.items():
        for key in keys:
            name = f"CONTEXTSVC_{section.upper()}_{key.upper()}"
            if name in environ:
                env_layer.setdefault(section, {})[key] = environ[name]
    layers.append(("env", env_layer))
    if test_config:
        layers.append(("test", test_config))

    settings = {s: {k: default for k, (default, _) in keys.items()} for s, keys in SCHEMA.items()}
    settings["lifecycle"] = {k: _convert("lifecycle", k, v, "duration")
                             for k, v in settings["lifecycle"].items()}
    settings[PER_TYPE] = {}
    settings["http"]["cors_origins"] = ()
    keys: dict[str, access.ApiKey] = {}
    for _, layer in layers:
        for section, values in layer.items():
            if section == API_KEYS:
                _api_keys(values, keys)
                continue
            if section == PER_TYPE:
                for key, raw in values.items():
                    seconds = _convert(PER_TYPE, key, raw, "duration")
                    if seconds is None:
                        raise ConfigError(f"[{PER_TYPE}] {key}: a duration is required")
                    settings[PER_TYPE][key] = seconds
                continue
            for key, raw in values.items():
                if section not in SCHEMA or key not in SCHEMA[section]:
                    raise ConfigError(f"unknown setting [{section}] {key}")
                settings[section][key] = _convert(section, key, raw, SCHEMA[section][key][1])
    if settings["logging"]["level"].lower() not in LEVELS:
        raise ConfigError(f"[logging] level: one of {', '.join(LEVELS)}")
    if settings["storage"]["engine"] not in ENGINES:
        raise ConfigError(f"[storage] engine: one of {', '.join(ENGINES)}")
    if not settings["lifecycle"]["sweep_interval"]:
        raise ConfigError("[lifecycle] sweep_interval: a duration is required")
    settings["storage"]["path"] = os.path.abspath(settings["storage"]["path"])
    settings[API_KEYS] = _checked_keys(keys)
    return settings


def _checked_keys(keys: dict[str, access.ApiKey]) -> dict[str, access.ApiKey]:
    """``[api_keys]``, refusing one key configured under two names (the log would
    name either)."""
    names: dict[bytes, str] = {}
    for name, key in keys.items():
        if key.digest in names:
            raise ConfigError(f"[{API_KEYS}] {name}: the same key as {names[key.digest]}")
        names[key.digest] = name
    return keys


def policy(settings: Mapping[str, Mapping[str, Any]]) -> Policy:
    """The lifecycle rules the settings configure."""
    return Policy(expiration=settings["lifecycle"]["expiration"],
                  by_type=dict(settings[PER_TYPE]),
                  auto_complete_after=settings["lifecycle"]["auto_complete_after"])
