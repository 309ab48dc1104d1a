"""aioknock: asyncio port knocking.

The codec (``aioknock.codec``) is pure: fields, ciphers and the port span, each
encoder beside its decoder, with time and randomness passed in. The daemon's
engine (``aioknock.daemon``) is pure too: packets in, actions out. The settings
table (``aioknock.config``) reads every value once into the objects the program
uses. Thin asyncio layers (``aioknock.asyncio``) move the knocks, packets and
firewall commands; ``aioknock.cli`` is the command.

The names below are imported when first used (PEP 562): ``import aioknock``, and
the command, which imports only what its run needs, load none of the library.
"""

from __future__ import annotations

import importlib

from .errors import AioknockError, ConfigError, InvalidValue, KnockError, SendError
from .version import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING, for mypy, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

    from .asyncio.client import build_knock, decode_knock
    from .asyncio.fleet import KnockResult, knock, knock_many
    from .codec.pipeline import KnockPlan
    from .codec.portspan import PortSpan
    from .config.loader import load_config
    from .config.settings import ClientSettings, DaemonSettings, KnockSettings, Settings

# Each lazily exported name and the module that defines it.
_LAZY = {
    "build_knock": ".asyncio.client",
    "decode_knock": ".asyncio.client",
    "KnockResult": ".asyncio.fleet",
    "knock": ".asyncio.fleet",
    "knock_many": ".asyncio.fleet",
    "KnockPlan": ".codec.pipeline",
    "PortSpan": ".codec.portspan",
    "load_config": ".config.loader",
    "ClientSettings": ".config.settings",
    "DaemonSettings": ".config.settings",
    "KnockSettings": ".config.settings",
    "Settings": ".config.settings",
}

__all__ = [
    "AioknockError",
    "ClientSettings",
    "ConfigError",
    "DaemonSettings",
    "InvalidValue",
    "KnockError",
    "KnockPlan",
    "KnockResult",
    "KnockSettings",
    "PortSpan",
    "SendError",
    "Settings",
    "__version__",
    "build_knock",
    "decode_knock",
    "knock",
    "knock_many",
    "load_config",
]


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # looked up once: later uses are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
