"""aioknock: asyncio port knocking.

The codec (``aioknock.codec``) is pure: fields, ciphers and the port span, each
encoder beside its decoder, with time and randomness passed in. The daemon's
engine (``aioknock.daemon``) is pure too: packets in, actions out. The settings
table (``aioknock.config``) reads every value once into the objects the program
uses. Thin asyncio layers (``aioknock.asyncio``) move the knocks, packets and
firewall commands; ``aioknock.cli`` is the command.
"""

from .asyncio.client import build_knock, decode_knock
from .asyncio.fleet import KnockResult, knock, knock_many
from .codec.pipeline import KnockPlan
from .codec.portspan import PortSpan
from .config.loader import load_config
from .config.settings import ClientSettings, DaemonSettings, KnockSettings, Settings
from .errors import AioknockError, ConfigError, InvalidValue, KnockError, SendError
from .version import __version__

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
