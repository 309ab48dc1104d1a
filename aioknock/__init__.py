"""aioknock: asyncio port knocking.

The codec (``aioknock.codec``) is pure: fields, ciphers and the port span, each
encoder beside its decoder, with time and randomness passed in. Thin asyncio
layers (``aioknock.asyncio``) move the knocks; ``aioknock.cli`` is the command.
"""

from .asyncio.fleet import KnockResult, knock, knock_many
from .codec.knock import KnockPlan
from .codec.portspan import PortSpan
from .config.loader import load_config
from .config.settings import ClientSettings, DaemonSettings, KnockSettings, Settings
from .errors import AioknockError, ConfigError, KnockError, SendError
from .knock import build_knock, parse_knock

__all__ = [
    "AioknockError",
    "ClientSettings",
    "ConfigError",
    "DaemonSettings",
    "KnockError",
    "KnockPlan",
    "KnockResult",
    "KnockSettings",
    "PortSpan",
    "SendError",
    "Settings",
    "build_knock",
    "knock",
    "knock_many",
    "load_config",
    "parse_knock",
]
