"""One host's knock, whoever sends it: its settings, what it sends, and its result.

The fleet (``fleet.py``, asyncio) and the one-host sender (``oneshot.py``, no event
loop) drive the same steps: the host's settings (its ``<host>`` blocks and own keys),
its knock or SPA packet, the reason of a failure, and the ``--json`` object.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from ..config.settings import ClientSettings
from ..config.values import override, place, placed
from ..errors import AioknockError, ConfigError, SendError
from ..records import MutableRecord
from .attempts import Attempt, Resolved
from .client import build_spa, client_address, client_for, plan_knock, plan_sealed, spa_allow

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from typing import Any, TypeAlias


Ports = Sequence[int | tuple[int, str]]

# The --json object, one per host: (name, JSON type, meaning). The manual and the
# README document it from this table; ``KnockResult.as_json`` writes exactly these.
JSON_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("host", "string", "the host as given (name or address)"),
    ("protocol", "string", "what was sent: knockclient (the prototype's knock), sequence "
                           "(knockd's), sealed (aioknock's authenticated knock) or spa "
                           "(fwknop's datagram)"),
    ("remote", "string", "the same: the prototype client's name for it"),
    ("address", "string", "the address knocked, as resolved"),
    ("values", "array of integers", "the knock's bytes before encryption (empty for a "
                                    "sequence or SPA)"),
    ("payload", "array of integers", "the bytes sent: the (encrypted) knock, the sealed "
                                     "knock's nonce, ciphertext and tag, or the SPA datagram"),
    ("ports", "array of integers", "the ports knocked, in order (SPA: the server's UDP port)"),
    ("started", "number", "epoch seconds when this host's knock began"),
    ("finished", "number", "epoch seconds when it ended (after -verify, if asked)"),
    ("ok", "boolean", "the knock left, and with -verify the port then accepted a connection; "
                      "false counts as failed in the summary and the exit status"),
    ("error", "string or null", "why ok is false (null when it is true)"),
    ("verified", "boolean or null", "-verify's answer: the port accepted a connection "
                                    "(true) or stayed closed (false); null: not asked"),
)  # fmt: skip


class KnockResult(MutableRecord):
    """What happened to one host; ``ok`` is False with ``error`` saying why (a port
    that -verify found still closed included)."""

    __slots__ = ("address", "attempts", "error", "finished", "host", "ok", "payload",
                 "ports", "protocol", "started", "values", "verified")  # fmt: skip

    def __init__(
        self, host: str, protocol: str = "knockclient", address: str = "",
        ports: list[int] | None = None, values: list[int] | None = None, payload: bytes = b"",
        attempts: list[Attempt] | None = None, started: float = 0.0, finished: float = 0.0,
        ok: bool = False, error: str = "", verified: bool | None = None,
    ) -> None:  # fmt: skip
        self.host = host
        self.protocol = protocol
        self.address = address
        self.ports = [] if ports is None else ports
        self.values = [] if values is None else values
        self.payload = payload
        self.attempts = [] if attempts is None else attempts
        self.started = started  # epoch seconds
        self.finished = finished
        self.ok = ok
        self.error = error
        self.verified = verified  # None: not asked

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` object: the fields of ``JSON_FIELDS``, in its order."""
        values = {
            "host": self.host,
            "protocol": self.protocol,
            "remote": self.host,
            "address": self.address,
            "values": self.values,
            "payload": list(self.payload),
            "ports": self.ports,
            "started": round(self.started, 6),
            "finished": round(self.finished, 6),
            "ok": self.ok,
            "error": self.error or None,
            "verified": self.verified,
        }
        return {name: values[name] for name, _, _ in JSON_FIELDS}


def begun(host: str, settings: ClientSettings) -> KnockResult:
    kind = "sequence" if settings.sequence and settings.protocol != "spa" else settings.protocol
    return KnockResult(host, kind, started=time.time())


def knock_ports(settings: ClientSettings, target: Resolved, result: KnockResult) -> Ports:
    """What to send: the fixed sequence, or a fresh knock for this host."""
    if settings.sequence:
        result.ports = [port for port, _ in settings.sequence]
        return settings.sequence
    if settings.protocol == "sealed":
        source = client_address(settings, target.address, target.family)
        result.payload = plan_sealed(settings, result.host, source=source)
        result.ports = settings.sealed_for(result.host).ports(result.payload)
        return result.ports
    client = client_for(settings, target.address, target.family)
    plan = plan_knock(settings, client)
    result.values, result.payload, result.ports = plan.values, plan.payload, plan.ports
    return plan.ports


def spa_packet(settings: ClientSettings, target: Resolved, result: KnockResult) -> bytes:
    """One datagram of its own (random value, salt, timestamp) for this host."""
    packet = build_spa(settings, spa_allow(settings, target.address, target.family))
    result.payload, result.ports = packet, [settings.spa_server_port]
    return packet


def still_closed(settings: ClientSettings) -> SendError:
    return SendError(f"port {settings.verify} still closed "
                     f"{settings.verify_timeout:g} s after the knock")  # fmt: skip


def failed(result: KnockResult, exc: AioknockError | OSError) -> None:
    # Every line names its host ("Too many open files" alone says nothing of which).
    error = str(exc) if isinstance(exc, AioknockError) else exc.strerror or str(exc)
    result.error = error if result.host in error else f"{result.host}: {error}"


# A host; or a host and its own settings, whole or as keys to change.
HostSpec: TypeAlias = "str | tuple[str, ClientSettings | Mapping[str, Any]]"


def host_settings(
    target: HostSpec, settings: ClientSettings, where: str | None = None
) -> tuple[str, ClientSettings]:
    """A target's host and its settings: ``settings.for_host(host)`` (the config file's
    ``<host>`` blocks), then the target's own keys (those the table marks per-host),
    checked whole; a ConfigError about those keys names ``where`` (by default the host)."""
    if isinstance(target, str):
        return target, settings.for_host(target)
    host, overrides = target
    if isinstance(overrides, ClientSettings):
        return host, overrides  # built (and checked) already: a hosts-file line's
    if not overrides:
        return host, settings.for_host(host)
    at = host if where is None else where
    if settings.sequence:
        raise ConfigError("a fixed sequence has no per-host settings", **place(at))
    own = override(settings.for_host(host), overrides, at, host=True)
    try:
        own.check_sendable()
    except ConfigError as exc:
        raise placed(exc, {}, at) from None
    return host, own


def refused(target: HostSpec, exc: ConfigError) -> KnockResult:
    """A target whose own settings are wrong: it fails alone, with the reason."""
    now = time.time()
    host = target if isinstance(target, str) else str(target[0])
    return KnockResult(host, started=now, finished=now, error=str(exc))
