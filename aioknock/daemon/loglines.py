"""Reading knocks out of firewall log lines (``runmode = file``).

iptables ``LOG`` and nftables ``log`` write the same kernel format
(``SRC=... DST=... PROTO=TCP SPT=... DPT=... SYN``), to kern.log or the
journal; the client's own ``fileformat`` is read with the pattern derived from
that template, so ``aioknock run -logtofile`` and the daemon meet in a file.
A custom regular expression needs the named groups ``src`` and ``dport``;
``proto`` and ``sport`` are optional.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..codec.logline import LogTemplate
from ..errors import ConfigError
from .tracker import Packet, Proto

# The kernel's nf_log format, shared by iptables LOG and nftables log.
KERNEL = re.compile(
    r"\bSRC=(?P<src>[0-9A-Fa-f:.]+) DST=\S+ .*?\bPROTO=(?P<proto>TCP|UDP)"
    r" SPT=(?P<sport>\d+) DPT=(?P<dport>\d+)(?P<rest>.*)$"
)
_ACK = re.compile(r"\bACK\b")


@dataclass(frozen=True, slots=True)
class LineReader:
    """Turns one log line into a Packet, or None for lines that are not knocks."""

    pattern: re.Pattern[str]
    kernel: bool = False

    @classmethod
    def for_format(cls, log_format: str, fileformat: str = "") -> LineReader:
        """``kernel`` (iptables/nftables), ``client`` (our fileformat) or a regex."""
        name = log_format.strip().lower()
        if name in ("kernel", "iptables", "nftables"):
            return cls(KERNEL, kernel=True)
        if name == "client":
            return cls(LogTemplate(fileformat).pattern())
        try:
            pattern = re.compile(log_format)
        except re.error as exc:
            raise ConfigError(f"not a regular expression: {exc}", key="log_format") from None
        missing = {"src", "dport"} - set(pattern.groupindex)
        if missing:
            raise ConfigError(
                f"the pattern needs the named groups {', '.join(sorted(missing))} "
                "(e.g. (?P<src>...), (?P<dport>\\d+))",
                key="log_format",
            )
        return cls(pattern)

    def parse(self, line: str, now: float) -> Packet | None:
        m = self.pattern.search(line)
        if m is None:
            return None
        groups = m.groupdict()
        # The client's template names the source _CLIENT_ and the port _REMOTEPORT_.
        src = groups.get("src") or groups.get("client")
        dport = groups.get("dport") or groups.get("remoteport")
        sport = groups.get("sport") or groups.get("clientport") or "0"
        proto_text = (groups.get("proto") or "tcp").lower()
        if not src or not dport or proto_text not in ("tcp", "udp"):
            return None
        if self.kernel and proto_text == "tcp" and _ACK.search(groups.get("rest") or ""):
            return None  # not a bare SYN: part of an established flow
        try:
            address = ipaddress.ip_address(src)
            port, source_port = int(dport), int(sport)
        except ValueError:
            return None
        if not (0 < port < 65536 and 0 <= source_port < 65536):
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        proto: Proto = "udp" if proto_text == "udp" else "tcp"
        return Packet(now, str(address), port, proto, source_port)
