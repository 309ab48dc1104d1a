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

from config import config_from_dict, config_from_env
from config.configuration_set import ConfigurationSet

from ..errors import ConfigError
from .general import Block, Entry, read_general
from .settings import (
    FLAG,
    PATH,
    ClientSettings,
    DaemonSettings,
    DoorSpec,
    KnockSettings,
    integer,
    parse_sequence,
)

log = logging.getLogger("aioknock.config")

S = TypeVar("S", bound=KnockSettings)
_FLAG_KEY = re.compile(r"flag(\d+)")
ENV_PREFIX = "AIOKNOCK"
CLI = "command line"
SYSTEM_DIR = Path("/etc/aioknock")


def search_path(name: str) -> list[Path]:
    """The prototype's four places (BIN = folder of the running script), then XDG and /etc."""
    home = Path(os.path.expanduser("~"))  # Path.home() raises when HOME and passwd lack it
    script = sys.argv[0] if sys.argv else ""
    bin_dir = Path(script).resolve().parent if script else Path.cwd()
    xdg_env = os.environ.get("XDG_CONFIG_HOME", "")
    xdg = Path(xdg_env) if os.path.isabs(xdg_env) else home / ".config"  # XDG: relative = unset
    return [
        home / f".{name}",
        bin_dir / name,
        bin_dir / "etc" / name,
        bin_dir.parent / "etc" / name,
        xdg / "aioknock" / name,
        SYSTEM_DIR / name,
    ]


def find_config(name: str) -> Path | None:
    """The first file of the search path that exists; only that one is read."""
    for candidate in search_path(name):
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # e.g. a folder on the way we may not search
            continue
    return None


class _Layer:
    """One source of values with the place each value came from."""

    def __init__(self, label: str) -> None:
        self.blocks: list[Entry] = []
        self.label = label
        self.values: dict[str, Any] = {}
        self.where: dict[str, str] = {}

    def add(self, key: str, value: Any, where: str) -> None:
        self.values[key] = value
        self.where[key] = where


def _canonical(key: str) -> str:
    """Keys are case-insensitive, and flag007 is flag7 (as -flag007 and FLAG007 are)."""
    key = key.lower()
    if m := _FLAG_KEY.fullmatch(key):
        return f"flag{int(m.group(1))}"
    return key


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


def _read_general(path: Path, known: set[str], blocks: frozenset[str]) -> _Layer:
    layer = _Layer(str(path))
    first: dict[str, Entry] = {}
    try:
        entries = read_general(path)
    except ConfigError as exc:
        if exc.key is None or _canonical(exc.key) in known:
            raise
        # Not a setting's name: it may be a passphrase (a key file given as the
        # configuration, or included), so the line is not shown.
        raise ConfigError("a line that is not 'key = value' (not shown: it may be a secret)",
                          source=exc.source, line=exc.line) from None  # fmt: skip
    for entry in entries:
        key = _canonical(entry.key)
        if isinstance(entry.value, Block) and entry.key.lower() in blocks:
            layer.blocks.append(entry)
            continue
        if isinstance(entry.value, Block):
            raise ConfigError(
                f"unexpected block <{entry.key}>; this file takes only key = value lines",
                source=entry.source, line=entry.line,
            )  # fmt: skip
        if not key:
            raise ConfigError(
                "a value without a key; expected 'key = value'",
                source=entry.source,
                line=entry.line,
            )
        _check_key(key, known, f"{entry.source}:{entry.line}")
        if (before := first.get(key)) is not None:
            if before.source == entry.source:
                where = f"lines {before.line} and {entry.line}"
            else:  # one of them came through <<include>>
                where = f"{before.source}:{before.line} and {entry.source}:{entry.line}"
            raise ConfigError(
                f"set twice, at {where}; keep one",
                source=entry.source, line=entry.line, key=key,
            )  # fmt: skip
        first[key] = entry
        layer.add(key, entry.value, f"{entry.source}:{entry.line}")
    return layer


def _toml_line(lines: list[str], raw_key: str) -> int:
    """The line (1-based) that sets top-level ``raw_key``; 0 when it cannot be told."""
    pattern = re.compile(rf"""^\s*["']?{re.escape(raw_key)}["']?\s*=""")
    return next((i for i, t in enumerate(lines, 1) if pattern.match(t)), 0)


def _toml_duplicate(path: Path, lines: list[str]) -> None:
    """Name both lines of a top-level key set twice (tomllib names only the second)."""
    seen: dict[str, int] = {}
    key = re.compile(r"""^\s*["']?([A-Za-z0-9_-]+)["']?\s*=""")
    for number, text in enumerate(lines, 1):
        if text.lstrip().startswith("["):
            return
        if (m := key.match(text)) is None:
            continue
        name = _canonical(m.group(1))
        if name in seen:
            raise ConfigError(
                f"set twice, at lines {seen[name]} and {number}; keep one",
                source=str(path), line=number, key=name,
            )  # fmt: skip
        seen[name] = number


def _read_toml(path: Path, known: set[str], blocks: frozenset[str]) -> _Layer:
    layer = _Layer(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror or exc}", source=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("cannot read file: not UTF-8 text", source=str(path)) from None
    lines = text.splitlines()
    _toml_duplicate(path, lines)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(found.group(1)) if found else len(lines) or None
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        raise ConfigError(f"not valid TOML: {reason}", source=str(path), line=line) from None
    for raw_key, value in data.items():
        key = _canonical(raw_key)
        line = _toml_line(lines, raw_key)
        where = f"{path}:{line}" if line else str(path)
        if raw_key.lower() in blocks and isinstance(value, dict):
            layer.blocks += _toml_blocks(path, lines, raw_key, value)
            continue
        _check_key(key, known, where)
        if isinstance(value, dict | list):
            raise ConfigError(
                "expected a single value", source=str(path), line=line or None, key=key
            )
        if key in layer.values:  # Port and port: two TOML keys, one setting
            raise ConfigError(
                f"set twice, at {layer.where[key]} and line {line}; keep one",
                source=str(path), line=line or None, key=key,
            )  # fmt: skip
        layer.add(key, value, where)
    return layer


def _toml_blocks(path: Path, lines: list[str], name: str, tables: dict[str, Any]) -> list[Entry]:
    """``[door.ssh]`` tables as the same blocks a Config::General ``<door ssh>`` gives."""
    out: list[Entry] = []
    for label, body in tables.items():
        header = re.compile(rf"^\s*\[\s*{re.escape(name)}\.{re.escape(label)}\s*\]")
        line = next((i for i, t in enumerate(lines, 1) if header.match(t)), 0)
        if not isinstance(body, dict):
            raise ConfigError(f"expected a table [{name}.{label}]", source=str(path), line=line)
        entries = tuple(
            Entry(k, str(v).lower() if isinstance(v, bool) else str(v), str(path),
                  _toml_line(lines[line:], k) + line if line else 0)
            for k, v in body.items()
        )  # fmt: skip
        out.append(Entry(name, Block(name, label, entries), str(path), line))
    return out


def read_file(path: Path, cls: type[KnockSettings]) -> _Layer:
    if not path.exists():
        raise ConfigError("no such config file", source=str(path))
    if not path.is_file():
        raise ConfigError("not a config file (a directory?)", source=str(path))
    known = _known(cls)
    if path.suffix.lower() == ".toml":
        return _read_toml(path, known, cls.BLOCKS)
    return _read_general(path, known, cls.BLOCKS)


def _read_env(known: set[str]) -> _Layer:
    layer = _Layer("environment")
    env = config_from_env(ENV_PREFIX, separator="_", lowercase_keys=True).as_dict()
    for dotted, value in env.items():
        raw = dotted.replace(".", "_")  # AIOKNOCK_KEY_FILE arrives as key.file
        name, key = f"{ENV_PREFIX}_{raw.upper()}", _canonical(raw)
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
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "%s: key_file %s can be read by others (mode %o); chmod 600 it",
            where, path, stat.S_IMODE(mode),
        )  # fmt: skip


def _config_relative(value: str, where: str) -> Path:
    """A file name as given; a relative one in a config file is relative to that file
    (a daemon's working folder is ``/``)."""
    path = Path(value).expanduser()
    source = _place(where)
    if not path.is_absolute() and "line" in source:
        return Path(source["source"]).parent / path
    return path


def _read_key_file(value: str, where: str) -> tuple[str, Path]:
    key_path = _config_relative(value, where)
    try:
        lines = key_path.read_text(encoding="utf-8").splitlines()
    except ValueError:  # a NUL in the path
        raise ConfigError(
            f"{value!r} is not a usable file name", key="key_file", **_place(where)
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read {key_path}: {exc.strerror or exc}", key="key_file", **_place(where)
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{key_path} is not UTF-8 text", key="key_file", **_place(where)
        ) from None
    if not lines or not lines[0]:
        raise ConfigError(f"{key_path} has an empty first line", key="key_file", **_place(where))
    _warn_readable(key_path, where)
    return lines[0], key_path


def _resolve_key(values: dict[str, Any], origins: dict[str, str], rank: dict[str, int]) -> None:
    """Pick the passphrase: ``key`` or ``key_file``, whichever comes from the later layer."""
    has_key, has_file = bool(values.get("key")), bool(values.get("key_file"))
    if has_key and has_file:
        if rank["key"] == rank["key_file"]:
            raise ConfigError(
                f"both key ({origins['key']}) and key_file are set; keep one",
                key="key_file", **_place(origins["key_file"]),
            )  # fmt: skip
        if rank["key"] < rank["key_file"]:
            log.debug("key from %s overrides key_file from %s",
                      origins["key"], origins["key_file"])  # fmt: skip
            has_file = False
    if has_file:
        where = origins["key_file"]
        values["key"], key_path = _read_key_file(values["key_file"], where)
        origins["key"] = f"{where} ({key_path})"
    elif has_key and origins.get("key") == CLI:
        log.warning("the key given on the command line is visible to other users in ps; "
                    "use key_file or AIOKNOCK_KEY")  # fmt: skip


def build_settings(
    cls: type[S],
    *,
    path: Path | None,
    overrides: Mapping[str, Any],
    override_label: str = CLI,
    sending: bool = True,
) -> S:
    """Merge the layers into a validated settings object of type ``cls``.

    ``sending=False`` (``aioknock decode``, the daemon) skips what only building a knock
    needs: flags for every FLAGm of the format, a remote, a valid client and port.
    """
    known = _known(cls)
    table = {k.name: k for k in cls.table()}
    layers: list[_Layer] = []
    cli = _Layer(override_label)
    for key, value in overrides.items():
        if value is None:
            continue
        _check_key(_canonical(key), known, override_label)
        cli.add(_canonical(key), value, override_label)
    layers.append(cli)
    layers.append(_read_env(known))
    if path is not None:
        layers.append(read_file(path, cls))

    merged = ConfigurationSet(*(config_from_dict(layer.values) for layer in layers))
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    rank: dict[str, int] = {}
    flags: dict[int, int] = {}
    for key in sorted(merged.as_dict()):
        rank[key], layer = next((i, la) for i, la in enumerate(layers) if key in la.values)
        where, raw = layer.where[key], layer.values[key]
        match = _FLAG_KEY.fullmatch(key)
        kind = FLAG if match else table[key].kind
        try:
            value = kind(raw)
        except (ValueError, TypeError):
            shown = "a value that is not text" if key in table and table[key].secret else repr(raw)
            raise ConfigError(
                f"expected {kind.expected}, got {shown}", key=key, **_place(where)
            ) from None
        origins[key] = where
        if match:
            if value > 255:
                log.warning("%s: %s = %d is above 255; using %d (mod 256)",
                            where, key, value, value % 256)  # fmt: skip
            flags[int(match.group(1))] = value % 256
        else:
            values[key] = value

    _resolve_key(values, origins, rank)
    for key, value in values.items():
        if table[key].kind is PATH and value:
            values[key] = str(_config_relative(value, origins[key]))
    blocks = [entry for layer in layers for entry in layer.blocks]
    if blocks:
        values["doors"] = parse_doors(blocks)
    settings = cls(**values, flags=flags, origins=origins)
    _validate(settings, sending=sending)
    return settings


def _sequence(text: str, entry: Entry) -> tuple[tuple[int, str], ...]:
    try:
        sequence = parse_sequence(text)
    except ValueError as exc:
        raise ConfigError(str(exc), source=entry.source, line=entry.line, key="sequence") from None
    if len(set(sequence)) != len(sequence):
        raise ConfigError("a port appears twice", source=entry.source, line=entry.line,
                          key="sequence")  # fmt: skip
    return sequence


def parse_doors(blocks: list[Entry]) -> tuple[DoorSpec, ...]:
    """``<door NAME>`` blocks: ``sequence`` (required), ``port`` to open, ``proto``."""
    doors: list[DoorSpec] = []
    for block_entry in blocks:
        block = block_entry.value
        assert isinstance(block, Block)
        place: dict[str, Any] = {"source": block_entry.source, "line": block_entry.line}
        if not block.label:
            raise ConfigError("a door needs a name: <door ssh>", **place)
        if any(d.name == block.label for d in doors):
            raise ConfigError(f"door {block.label!r} is defined twice", **place)
        sequence: tuple[tuple[int, str], ...] = ()
        port, proto = 0, "tcp"
        for entry in block.entries:
            key, value = entry.key.lower(), entry.value
            at: dict[str, Any] = {"source": entry.source, "line": entry.line, "key": key}
            if isinstance(value, Block):
                raise ConfigError(f"unexpected block <{entry.key}> inside a door", **place)
            if key == "sequence":
                sequence = _sequence(value, entry)
            elif key == "port":
                try:
                    port = integer(1, 65535)(value)
                except ValueError:
                    raise ConfigError(f"expected a port 1-65535, got {value!r}", **at) from None
            elif key == "proto":
                if value.lower() not in ("tcp", "udp"):
                    raise ConfigError(f"expected tcp or udp, got {value!r}", **at)
                proto = value.lower()
            else:
                raise ConfigError("unknown door setting; expected sequence, port, proto", **at)
        if len(sequence) < 2:
            raise ConfigError(f"door {block.label!r} needs a sequence of 2 or more ports", **place)
        if not port:
            raise ConfigError(f"door {block.label!r} needs the port to open: port = 22", **place)
        doors.append(DoorSpec(block.label, sequence, port, proto, block_entry.source))
    return tuple(doors)


def _at(settings: KnockSettings, key: str) -> dict[str, Any]:
    """Where ``key``'s value came from, as ConfigError keywords (nothing for a default)."""
    origin = settings.origin(key)
    return {} if origin == "default" else _place(origin)


def _validate(settings: KnockSettings, *, sending: bool) -> None:
    """Build the codec once so that format, span and cipher errors surface at load time."""
    from ..knock import codec_for  # the glue layer, which caches the codec

    if settings.encrypt and not settings.key:
        raise ConfigError(
            "encryption needs a passphrase: set key, key_file or AIOKNOCK_KEY",
            key="encrypt", **_at(settings, "encrypt"),
        )  # fmt: skip
    try:
        codec = codec_for(settings)
        if sending and isinstance(settings, ClientSettings):
            missing = [n for n in codec.format.flag_numbers() if n not in settings.flags]
            if missing:
                raise ConfigError(
                    f"the knock uses FLAG{missing[0]} but flag{missing[0]} is not set", key="knock"
                )
            _validate_client(settings, codec.format.portbytes)
        if isinstance(settings, DaemonSettings):
            _validate_daemon(settings)
    except ConfigError as exc:
        if exc.source is None and exc.key is not None:
            raise ConfigError(exc.message, key=exc.key, **_at(settings, exc.key)) from None
        raise


def _validate_daemon(settings: DaemonSettings) -> None:
    from ..daemon.doors import Command
    from ..daemon.loglines import LineReader
    from ..daemon.nftables import check_table

    if settings.runmode == "file":
        LineReader.for_format(settings.log_format, settings.fileformat)
    if settings.backend == "nftables":
        check_table(settings.nft_table)
    elif not settings.open:
        raise ConfigError("backend = command needs an open command", key="open")
    else:
        Command.parse(settings.open, "open")
        if settings.close:
            Command.parse(settings.close, "close")
    if not settings.encoded and not settings.doors:
        raise ConfigError("nothing to listen for: encoded = no and no <door> blocks",
                          key="encoded")  # fmt: skip
    from ..knock import codec_for

    if settings.encoded and "PORT" not in codec_for(settings).format.fields:
        # The knock names the port to open; without it no knock could open anything.
        raise ConfigError("the daemon's knock needs a PORT field (or encoded = no)",
                          key="knock", **_at(settings, "knock"))  # fmt: skip


def _validate_client(settings: ClientSettings, portbytes: int) -> None:
    import ipaddress

    if settings.port >= 1 << (8 * portbytes):
        high = (1 << (8 * portbytes)) - 1
        why = f"portbytes = {portbytes} ({settings.origin('portbytes')})"
        raise ConfigError(
            f"expected a whole number 0-{high} with {why}, got {settings.port}", key="port"
        )
    if not settings.remote:
        raise ConfigError("no host to knock; set remote", key="remote")
    if settings.client.lower() not in ("", "auto"):
        try:
            ipaddress.IPv4Address(settings.client)
        except ValueError:
            raise ConfigError(
                f"expected an IPv4 address, empty or auto, got {settings.client!r}", key="client"
            ) from None


def check_sendable(settings: ClientSettings) -> None:
    """Everything building a knock from ``settings`` needs (format, span, cipher, flags,
    port width, client); raises ConfigError naming the key."""
    _validate(settings, sending=True)


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> ClientSettings:
    """Client settings from ``path`` (or the first file on the search path) plus overrides."""
    found = Path(path) if path is not None else find_config("knockclient.conf")
    log.debug("config file: %s", found if found else "none found, using built-in defaults")
    return build_settings(ClientSettings, path=found, overrides=overrides,
                          override_label="load_config() argument")  # fmt: skip
