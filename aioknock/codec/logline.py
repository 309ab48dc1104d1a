"""Faked firewall log lines: the client's writer and the matching reader.

``fileformat`` templates hold the fields _DATE_, _CLIENT_, _REMOTE_,
_CLIENTPORT_ and _REMOTEPORT_. ``LogTemplate.format`` fills them in;
``LogTemplate.match`` reads a line written from the same template back, so
the client's file delivery and the daemon's file mode share one definition.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

FIELDS = {
    "_DATE_": r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d",
    "_CLIENT_": r"[0-9A-Fa-f:.]+",
    "_REMOTE_": r"[0-9A-Fa-f:.]+",
    "_CLIENTPORT_": r"\d{1,5}",
    "_REMOTEPORT_": r"\d{1,5}",
}
_FIELD = re.compile("|".join(FIELDS))


def syslog_date(when: float) -> str:
    """``Nov 26 14:27:02`` / ``Nov  6 14:27:02``: how syslog stamps kernel lines."""
    t = time.localtime(when)
    return f"{time.strftime('%b', t)} {t.tm_mday:2d} {time.strftime('%H:%M:%S', t)}"


@dataclass(frozen=True, slots=True)
class LogRecord:
    date: str
    client: str
    remote: str
    clientport: int
    remoteport: int


@dataclass(frozen=True, slots=True)
class LogTemplate:
    template: str

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
        line = _FIELD.sub(lambda m: values[m.group(0)], self.template)
        return line.replace("\n", " ")

    def pattern(self) -> re.Pattern[str]:
        parts: list[str] = []
        seen: set[str] = set()
        pos = 0
        for m in _FIELD.finditer(self.template):
            parts.append(re.escape(self.template[pos : m.start()]))
            name = m.group(0).strip("_").lower()
            parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>{FIELDS[m.group(0)]})")
            seen.add(name)
            pos = m.end()
        parts.append(re.escape(self.template[pos:]))
        return re.compile("".join(parts))

    def match(self, line: str) -> LogRecord | None:
        m = self.pattern().search(line.rstrip("\n"))
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
