"""Faked firewall log lines (``fileformat``): the client's writer beside the daemon's reader.

Templates hold the fields _DATE_, _CLIENT_, _REMOTE_, _CLIENTPORT_ and _REMOTEPORT_.
``LogTemplate.format`` fills them in; ``LogTemplate.match`` reads a line written from
the same template back, so the client's file delivery and the daemon's file mode
(``log_format = client``) share one definition.
"""

from __future__ import annotations

import re
import time

from ..records import Record

_HOST = r"[0-9A-Za-z:.%-]+"  # an IPv4/IPv6 address or a host name (the sender writes either)
FIELDS = {
    "_DATE_": r"[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}",
    "_CLIENT_": _HOST,
    "_REMOTE_": _HOST,
    "_CLIENTPORT_": r"[0-9]{1,5}",
    "_REMOTEPORT_": r"[0-9]{1,5}",
}
_FIELD = "|".join(FIELDS)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def syslog_date(when: float) -> str:
    """``Nov 26 14:27:02`` / ``Nov  6 14:27:02``: how syslog stamps kernel lines.

    English month names whatever the locale, as syslog writes them.
    """
    t = time.localtime(when)
    return f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def _compile(template: str) -> re.Pattern[str]:
    parts: list[str] = []
    seen: set[str] = set()
    pos = 0
    for m in re.finditer(_FIELD, template):
        parts.append(re.escape(template[pos : m.start()]))
        name = m.group(0).strip("_").lower()
        parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>{FIELDS[m.group(0)]})")
        seen.add(name)
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts))


class LogRecord(Record):
    __slots__ = ("client", "clientport", "date", "remote", "remoteport")

    def __init__(
        self, date: str, client: str, remote: str, clientport: int, remoteport: int,
    ) -> None:  # fmt: skip
        self.date = date
        self.client = client
        self.remote = remote
        self.clientport = clientport
        self.remoteport = remoteport


class LogTemplate(Record):
    """Any text is a template (its literal parts are escaped), so the reader's pattern is
    compiled when a line is first read: a client that writes no log never compiles it."""

    __slots__ = ("_pattern", "template")

    def __init__(self, template: str) -> None:
        self.template = template

    @property
    def pattern(self) -> re.Pattern[str]:
        try:
            return self._pattern
        except AttributeError:  # the first read: compiled once, then read-only
            self._pattern: re.Pattern[str] = _compile(_one_line(self.template))
            return self._pattern

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LogTemplate):
            return NotImplemented
        return self.template == other.template

    def __hash__(self) -> int:
        return hash(self.template)

    def __repr__(self) -> str:
        return f"LogTemplate({self.template!r})"

    def fields(self) -> set[str]:
        """The fields the template holds, lower-case without underscores (``client``)."""
        return {m.strip("_").lower() for m in re.findall(_FIELD, self.template)}

    def __str__(self) -> str:
        return self.template

    def format(
        self, *, when: float, client: str, remote: str, clientport: int, remoteport: int
    ) -> str:
        values = {
            "_DATE_": syslog_date(when),
            "_CLIENT_": client,
            "_REMOTE_": remote,
            "_CLIENTPORT_": str(clientport),
            "_REMOTEPORT_": str(remoteport),
        }
        return _one_line(re.sub(_FIELD, lambda m: values[m.group(0)], self.template))

    def match(self, line: str) -> LogRecord | None:
        """The fields of a line written from this template; None for any other line."""
        m = self.pattern.search(line.rstrip("\n"))
        if m is None:
            return None
        found = m.groupdict()
        return LogRecord(
            found.get("date") or "",
            found.get("client") or "",
            found.get("remote") or "",
            int(found.get("clientport") or 0),
            int(found.get("remoteport") or 0),
        )
