"""Find, read, layer and validate settings.

Layers, later ones winning: built-in defaults < config file < environment
(``AIOKNOCK_<KEY>``) < command line / keyword overrides. python-configuration
does the layering; we keep, per key, where its value came from, so that every
error names the file and line (or the variable, or the flag) to fix.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import stat
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from config import ConfigurationSet, config_from_dict, config_from_env

from ..errors import ConfigError
from .general import Block, read_general
from .settings import FLAG, ClientSettings, KnockSettings

log = logging.getLogger("aioknock.config")

S = TypeVar("S", bound=KnockSettings)
_FLAG_KEY = re.compile(r"flag(\d+)")
ENV_PREFIX = "AIOKNOCK"
CLI = "command line"


def search_path(name: str) -> list[Path]:
    """The prototype's four places (BIN = folder of the running script), then XDG and /etc."""
    home = Path.home()
    bin_dir = Path(sys.argv[0] or ".").resolve().parent
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [
        home / f".{name}",
        bin_dir / name,
        bin_dir / "etc" / name,
        bin_dir.parent / "etc" / name,
        xdg / "aioknock" / name,
        Path("/etc/aioknock") / name,
    ]


def find_config(name: str) -> Path | None:
    for candidate in search_path(name):
        if candidate.is_file():
            return candidate
    return None


class _Layer:
    """One source of values with the place each value came from."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.values: dict[str, Any] = {}
        self.where: dict[str, str] = {}

    def add(self, key: str, value: Any, where: str) -> None:
        self.values[key] = value
        self.where[key] = where


def _known(cls: type[KnockSettings]) -> set[str]:
    return {k.name for k in cls.table()}


def _check_key(key: str, known: set[str], where: str) -> None:
    if key in known or _FLAG_KEY.fullmatch(key):
        return
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    source, _, line = where.rpartition(":")
    if source and line.isdigit():
        raise ConfigError(f"unknown setting{hint}", source=source, line=int(line), key=key)
    raise ConfigError(f"unknown setting{hint}", source=where, key=key)


def _read_general(path: Path, known: set[str]) -> _Layer:
    layer = _Layer(str(path))
    first: dict[str, int] = {}
    for entry in read_general(path):
        key = entry.key.lower()
        if isinstance(entry.value, Block):
            raise ConfigError(
                f"unexpected block <{entry.key}>; this file takes only key = value lines",
                source=entry.source, line=entry.line,
            )  # fmt: skip
        _check_key(key, known, f"{entry.source}:{entry.line}")
        if key in first:
            raise ConfigError(
                f"set twice, at lines {first[key]} and {entry.line}; keep one",
                source=entry.source, line=entry.line, key=key,
            )  # fmt: skip
        first[key] = entry.line
        layer.add(key, entry.value, f"{entry.source}:{entry.line}")
    return layer


def _read_toml(path: Path, known: set[str]) -> _Layer:
    layer = _Layer(str(path))
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from None
    lines = text.splitlines()
    for raw_key, value in data.items():
        key = raw_key.lower()
        pattern = re.compile(rf"""^\s*["']?{re.escape(raw_key)}["']?\s*=""")
        line = next((i for i, t in enumerate(lines, 1) if pattern.match(t)), 0)
        where = f"{path}:{line}" if line else str(path)
        _check_key(key, known, where)
        if isinstance(value, dict | list):
            raise ConfigError(
                "expected a single value", source=str(path), line=line or None, key=key
            )
        layer.add(key, value, where)
    return layer


def read_file(path: Path, cls: type[KnockSettings]) -> _Layer:
    if not path.is_file():
        raise ConfigError("no such file", source=str(path))
    known = _known(cls)
    if path.suffix.lower() == ".toml":
        return _read_toml(path, known)
    return _read_general(path, known)


def _read_env(known: set[str]) -> _Layer:
    layer = _Layer("environment")
    env = config_from_env(ENV_PREFIX, separator="_", lowercase_keys=True).as_dict()
    for dotted, value in env.items():
        key = dotted.replace(".", "_")  # AIOKNOCK_KEY_FILE arrives as key.file
        name = f"{ENV_PREFIX}_{key.upper()}"
        if key in known or _FLAG_KEY.fullmatch(key):
            layer.add(key, value, f"environment {name}")
        else:
            log.warning("ignoring environment variable %s: no setting %r", name, key)
    return layer


def _place(where: str) -> dict[str, Any]:
    source, _, line = where.rpartition(":")
    if source and line.isdigit():
        return {"source": source, "line": int(line)}
    return {"source": where}


def _warn_readable(path: Path, where: str) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "%s: key_file %s can be read by others (mode %o); chmod 600 it",
            where, path, stat.S_IMODE(mode),
        )  # fmt: skip


def build_settings(
    cls: type[S],
    *,
    path: Path | None,
    overrides: Mapping[str, Any],
    override_label: str = CLI,
) -> S:
    """Merge the layers into a validated settings object of type ``cls``."""
    known = _known(cls)
    layers: list[_Layer] = []
    cli = _Layer(override_label)
    for key, value in overrides.items():
        if value is None:
            continue
        _check_key(key.lower(), known, override_label)
        cli.add(key.lower(), value, override_label)
    layers.append(cli)
    layers.append(_read_env(known))
    if path is not None:
        layers.append(read_file(path, cls))

    merged = ConfigurationSet(*(config_from_dict(layer.values) for layer in layers))
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    flags: dict[int, int] = {}
    for key in sorted(merged.as_dict()):
        where = next(layer.where[key] for layer in layers if key in layer.values)
        raw = next(layer.values[key] for layer in layers if key in layer.values)
        match = _FLAG_KEY.fullmatch(key)
        kind = FLAG if match else next(k.kind for k in cls.table() if k.name == key)
        try:
            value = kind(raw)
        except (ValueError, TypeError):
            raise ConfigError(
                f"expected {kind.expected}, got {raw!r}", key=key, **_place(where)
            ) from None
        origins[key] = where
        if match:
            if value > 255:
                log.warning("%s: %s = %d is above 255; using %d (mod 256)",
                            where, key, value, value % 256)  # fmt: skip
            flags[int(match.group(1))] = value % 256
        else:
            values[key] = value

    if values.get("key") and origins.get("key") == CLI:
        log.warning("the key given on the command line is visible to other users in ps; "
                    "use key_file or AIOKNOCK_KEY")  # fmt: skip
    if not values.get("key") and values.get("key_file"):
        key_path = Path(values["key_file"]).expanduser()
        where = origins["key_file"]
        try:
            lines = key_path.read_text(encoding="utf-8").splitlines()
            _warn_readable(key_path, where)
        except OSError as exc:
            raise ConfigError(f"cannot read {key_path}: {exc.strerror}", key="key_file",
                              **_place(where)) from None  # fmt: skip
        if not lines or not lines[0]:
            raise ConfigError(f"{key_path} is empty", key="key_file", **_place(where))
        values["key"] = lines[0]
        origins["key"] = f"{where} ({key_path})"

    settings = cls(**values, flags=flags, origins=origins)
    _validate(settings)
    return settings


def _validate(settings: KnockSettings) -> None:
    """Build the codec once so that format, span and cipher errors surface at load time."""
    from ..knock import codec_for  # the glue layer, which caches the codec

    try:
        codec = codec_for(settings)
        missing = [n for n in codec.format.flag_numbers() if n not in settings.flags]
        if missing:
            raise ConfigError(
                f"the knock uses FLAG{missing[0]} but flag{missing[0]} is not set", key="knock"
            )
        if isinstance(settings, ClientSettings):
            _validate_client(settings, codec.format.portbytes)
    except ConfigError as exc:
        if exc.source is None and exc.key is not None:
            raise ConfigError(exc.message, key=exc.key, **_place(settings.origin(exc.key))) from None
        raise


def _validate_client(settings: ClientSettings, portbytes: int) -> None:
    import ipaddress

    if settings.port >= 1 << (8 * portbytes):
        raise ConfigError(f"{settings.port} does not fit in portbytes = {portbytes}", key="port")
    if not settings.remote:
        raise ConfigError("no host to knock; set remote", key="remote")
    if settings.client.lower() not in ("", "auto"):
        try:
            ipaddress.IPv4Address(settings.client)
        except ValueError:
            raise ConfigError(
                f"expected an IPv4 address, empty or auto, got {settings.client!r}", key="client"
            ) from None


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> ClientSettings:
    """Client settings from ``path`` (or the first file on the search path) plus overrides."""
    found = Path(path) if path is not None else find_config("knockclient.conf")
    log.debug("config file: %s", found if found else "none found, using built-in defaults")
    return build_settings(ClientSettings, path=found, overrides=overrides,
                          override_label="argument")  # fmt: skip
