"""Find, layer and build settings.

Layers, later ones winning: built-in defaults < config file < (for one host) the file's
``<host>`` blocks < environment (``AIOKNOCK_<KEY>``) < command line / keyword overrides;
a hosts-file line's own values beat them all for its host. python-configuration reads
the environment, and is imported only when an ``AIOKNOCK_`` variable is set (it loads
TOML, datetime and importlib.resources: ~7 ms of a one-knock start); the layers are flat
mappings, merged first-wins. We keep, per key, where its value came from, so that every
error names the file and line (or the variable, or the flag) to fix.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from ..errors import ConfigError
from ..logs import get_logger
from .files import Layer, read_file
from .kinds import PATH
from .settings import ClientSettings, KnockSettings
from .table import Table
from .values import (
    Given,
    Values,
    canonical,
    check_key,
    config_relative,
    is_flag,
    make,
    place,
    placed,
    read_key_file,
    read_values,
)

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, TypeVar

    S = TypeVar("S", bound=KnockSettings)

log = get_logger("aioknock.config")

ENV_PREFIX = "AIOKNOCK"
CLI = "command line"
SYSTEM_DIR = "/etc/aioknock"


def search_places(name: str) -> list[str]:
    """The search path as text (a run that finds no file needs no pathlib: ~3 ms)."""
    home = os.path.expanduser("~")  # Path.home() raises when HOME and passwd lack it
    script = sys.argv[0] if sys.argv else ""
    bin_dir = os.path.dirname(os.path.realpath(script)) if script else os.getcwd()
    xdg_env = os.environ.get("XDG_CONFIG_HOME", "")
    xdg = xdg_env if os.path.isabs(xdg_env) else os.path.join(home, ".config")  # relative: unset
    return [
        os.path.join(home, f".{name}"),
        os.path.join(bin_dir, name),
        os.path.join(bin_dir, "etc", name),
        os.path.join(os.path.dirname(bin_dir), "etc", name),
        os.path.join(xdg, "aioknock", name),
        os.path.join(SYSTEM_DIR, name),
    ]


def search_path(name: str) -> list[Path]:
    """The prototype's four places (BIN = folder of the running script), then XDG and /etc."""
    from pathlib import Path

    return [Path(candidate) for candidate in search_places(name)]


def find_config(name: str) -> Path | None:
    """The first file of the search path that exists; only that one is read (a folder on
    the way we may not search counts as no file)."""
    for candidate in search_places(name):
        if os.path.isfile(candidate):
            from pathlib import Path

            return Path(candidate)
    return None


def _read_env(cls: type[Table]) -> Layer:
    layer = Layer("environment")
    if not any(name.startswith(f"{ENV_PREFIX}_") for name in os.environ):
        return layer
    from config import config_from_env

    env = config_from_env(ENV_PREFIX, separator="_", lowercase_keys=True).as_dict()
    for dotted, value in env.items():
        raw = dotted.replace(".", "_")  # AIOKNOCK_KEY_FILE arrives as key.file
        name, key = f"{ENV_PREFIX}_{raw.upper()}", canonical(raw)
        if cls.row(key) is not None or (cls.FLAGS and is_flag(key)):
            layer.add(key, value, f"environment {name}")
        else:
            log.warning("ignoring environment variable %s: no setting %r", name, key)
    return layer


def _read_overrides(cls: type[Table], overrides: Mapping[str, Any], label: str) -> Layer:
    layer = Layer(label)
    for key, value in overrides.items():
        if value is None:  # not given
            continue
        check_key(cls, canonical(key), label)
        layer.add(canonical(key), value, label)
    return layer


def _merge(layers: list[Layer]) -> tuple[list[Given], dict[str, int]]:
    """Each key's value from the first layer that has it, and that layer's rank."""
    rank: dict[str, int] = {}
    for i, layer in reversed(list(enumerate(layers))):
        rank.update(dict.fromkeys(layer.values, i))
    given = [
        Given(key, layers[i].values[key], layers[i].where[key]) for key, i in sorted(rank.items())
    ]
    return given, rank


def _resolve_key(read: Values, rank: dict[str, int]) -> None:
    """Pick the passphrase: ``key`` or ``key_file``, whichever comes from the later layer."""
    values, origins = read.values, read.origins
    has_key, has_file = bool(values.get("key")), bool(values.get("key_file"))
    if has_key and has_file:
        if rank["key"] == rank["key_file"]:
            raise ConfigError(
                f"both key ({origins['key']}) and key_file are set; keep one",
                key="key_file", **place(origins["key_file"]),
            )  # fmt: skip
        if rank["key"] < rank["key_file"]:
            log.debug("key from %s overrides key_file from %s",
                      origins["key"], origins["key_file"])  # fmt: skip
            has_file = False
    if has_file:
        where = origins["key_file"]
        values["key"], key_path = read_key_file(values["key_file"], where)
        origins["key"] = f"{where} ({key_path})"
    elif has_key and origins.get("key") == CLI:
        log.warning("the key given on the command line is visible to other users in ps; "
                    "use key_file or AIOKNOCK_KEY")  # fmt: skip


def _resolve_paths(cls: type[Table], read: Values) -> None:
    """PATH-kind values are relative to the config file that names them."""
    for key, value in read.values.items():
        row = cls.row(key)
        if row is not None and row.kind is PATH and value:
            read.values[key] = str(config_relative(value, read.origins[key]))


def _file_origins(read: Values, rank: dict[str, int], file_rank: int) -> dict[str, str]:
    """Where the file's top-level values came from: a ``<host>`` block may replace those
    (and defaults), not what the command line, the environment or fwknop's rc file set."""

    def in_file(key: str) -> bool:
        if key == "key" and key not in rank:  # read from key_file
            key = "key_file"
        return rank.get(key) == file_rank

    return {key: where for key, where in read.origins.items() if in_file(key)}


def build_settings(
    cls: type[S],
    *,
    path: Path | None,
    overrides: Mapping[str, Any],
    override_label: str = CLI,
    sending: bool = True,
    extra_layers: Sequence[Layer] = (),
) -> S:
    """Merge the layers into a checked settings object of type ``cls``.

    ``sending=False`` (``aioknock decode``, the daemon) skips what only building a knock
    needs: flags for every FLAGm of the format, a remote, a port that fits.
    ``extra_layers`` (fwknop's rc file) rank below the environment and above the config file.
    """
    layers = [_read_overrides(cls, overrides, override_label), _read_env(cls), *extra_layers]
    if path is not None:
        layers.append(read_file(path, cls))
    given, rank = _merge(layers)
    read = read_values(cls, given)
    _resolve_key(read, rank)
    _resolve_paths(cls, read)
    blocks = [entry for layer in layers for entry in layer.blocks]
    extra = cls.read_blocks(blocks, _file_origins(read, rank, len(layers) - 1)) if blocks else {}
    settings = make(cls, read, None if path is None else str(path), **extra)
    if sending and isinstance(settings, ClientSettings):
        try:
            settings.check_sendable()
        except ConfigError as exc:
            raise placed(exc, settings.origins) from None
    return settings


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> ClientSettings:
    """Client settings from ``path`` (or the first file on the search path) plus overrides."""
    from pathlib import Path

    found = Path(path) if path is not None else find_config("knockclient.conf")
    log.debug("config file: %s", found if found else "none found, using built-in defaults")
    return build_settings(ClientSettings, path=found, overrides=overrides,
                          override_label="load_config() argument")  # fmt: skip
