"""Reading knocks out of firewall log lines (``runmode = file``).

iptables ``LOG`` and nftables ``log`` write the same kernel format
(``IN=... OUT=... SRC=... DST=... PROTO=TCP SPT=... DPT=... SYN``), to kern.log
or the journal; only a TCP SYN without ACK, or a UDP datagram, is a knock. The
client's own ``fileformat`` is read with the pattern derived from that
template, so ``aioknock run -logtofile`` and the daemon meet in a file. A
custom regular expression needs the named groups ``src`` and ``dport``;
``proto`` and ``sport`` are optional.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..codec.logtemplate import LogTemplate
from ..codec.sequence import Proto
from ..errors import InvalidValue, shown
from .packet import Packet

KMSG = "/dev/kmsg"  # the kernel's log itself: its lines are bare messages (anchored)

# The kernel's nf_log format (nf_log_syslog.c), shared by iptables LOG and nftables log:
# "IN=.. OUT=.. [PHYSIN=.. MAC=..] SRC=.. DST=.. <ip fields> PROTO=.. SPT=.. DPT=.. <tcp fields>".
# Matched token by token, in linear time: a regular expression for it backtracks
# quadratically (or worse) on long lines, and a log line may carry text a stranger chose.
# A log prefix without its trailing space runs into IN= ("knockIN=eth0").
_TOKEN_END = re.compile(r"\S*")
_OUT_NEXT = re.compile(r"\s+OUT=")


def _kernel_start(line: str, prefix: str, anchored: bool) -> int:
    """Where the packet fields begin: the first ``IN=`` right after ``prefix`` whose
    token is followed by ``OUT=`` (-1 for none). Linear in the line: a token that fails
    is never scanned again for the ``IN=`` inside it, which would fail alike."""
    target = prefix + "IN="
    at = 0 if line.startswith(target) else -1 if anchored else line.find(target)
    while at >= 0:
        start = at + len(prefix)
        m = _TOKEN_END.match(line, start + 3)
        assert m is not None  # \S* matches anywhere
        if _OUT_NEXT.match(line, m.end()):
            return start
        if anchored:
            return -1
        at = line.find(target, m.end())
    return -1


# Between OUT= and SRC= the kernel writes only these: anything else means the IN=/OUT=
# pair came from text quoted in some other message (a program's name, say).
_LINK_FIELDS = ("PHYSIN=", "PHYSOUT=", "MAC=", "MACSRC=", "MACDST=", "MACPROTO=", "ARP")


def _kernel_fields(line: str, start: int) -> dict[str, str] | None:
    """src, proto, sport, dport and the TCP flags of the line's first packet header."""
    tokens = line[start:].split()  # tokens[0] is IN=, tokens[1] OUT=
    fields: dict[str, str] = {}
    it = iter(tokens[2:])
    for token in it:
        if token.startswith("SRC="):
            fields["src"] = token[4:]
            break
        if not token.startswith(_LINK_FIELDS):
            return None
    else:
        return None
    if not next(it, "").startswith("DST="):
        return None
    for token in it:
        if token.startswith("PROTO="):  # only the first: an ICMP error quotes another header
            fields["proto"] = token[6:]
            break
    else:
        return None
    if fields["proto"] not in ("TCP", "UDP"):
        return None
    sport, dport = next(it, ""), next(it, "")
    if not (sport.startswith("SPT=") and dport.startswith("DPT=") and sport[4:] and dport[4:]):
        return None
    fields["sport"], fields["dport"] = sport[4:], dport[4:]
    fields["rest"] = " ".join(it)
    return fields


def _port(text: str | None, default: int | None = None) -> int | None:
    if not text:
        return default
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 5):
        return None
    return int(text)


@dataclass(frozen=True, slots=True)
class LogFormat:
    """The ``log_format`` setting: kernel lines, the client's template, or a pattern."""

    name: str  # "kernel", "client" or "pattern"
    pattern: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, text: str) -> LogFormat:
        name = text.strip().lower()
        if name in ("kernel", "iptables", "nftables"):
            return cls("kernel")
        if name == "client":
            return cls("client")
        try:
            pattern = re.compile(text)
        except re.error as exc:
            # Its message may quote the pattern's characters (a line end, an escape) and,
            # for a pattern of several lines, adds a line of its own: one line, printable.
            at = "" if exc.pos is None else f" at position {exc.pos}"
            raise InvalidValue(f"not a regular expression: {shown(exc.msg, 100)}{at}") from None
        except (RecursionError, OverflowError) as exc:
            raise InvalidValue(f"not a regular expression: {exc}") from None
        missing = {"src", "dport"} - set(pattern.groupindex)
        if missing:
            raise InvalidValue(
                f"the pattern needs the named groups {', '.join(sorted(missing))} "
                "(e.g. (?P<src>...), (?P<dport>\\d+))"
            )
        return cls("pattern", pattern)

    def __str__(self) -> str:
        return self.pattern.pattern if self.pattern is not None else self.name


@dataclass(frozen=True, slots=True)
class LineReader:
    """Turns one log line into a Packet, or None for lines that are not knocks."""

    pattern: re.Pattern[str] | None = None  # a pattern of the user's, or the template's
    kernel: bool = False
    anchored: bool = False  # the fields must start the line (/dev/kmsg messages)
    template: LogTemplate | None = None  # log_format = client
    prefix: str = ""  # kernel lines: the firewall rule's log prefix, right before IN=

    @classmethod
    def build(
        cls, fmt: LogFormat | str, template: LogTemplate | str = "", *, prefix: str = "",
        anchored: bool = False,
    ) -> LineReader:  # fmt: skip
        """A reader for ``fmt`` (``kernel``, ``client`` with ``template``, or a pattern; as
        the settings read them, or as text). ``prefix``: the firewall rule's log prefix;
        kernel lines count only with it right before IN=. ``anchored``: the line is a
        bare kernel message, which must begin with the prefix, so text the kernel quotes
        from user space later in a message of its own (a crashing program's name) cannot
        pass for a firewall line. A ``client`` template must hold _CLIENT_ and
        _REMOTEPORT_ (else InvalidValue)."""
        fmt = LogFormat.parse(fmt) if isinstance(fmt, str) else fmt
        template = LogTemplate(template) if isinstance(template, str) else template
        if fmt.name == "kernel":
            return cls(kernel=True, anchored=anchored, prefix=prefix)
        if fmt.name == "client":
            missing = {"client", "remoteport"} - template.fields()
            if missing:
                fields = ", ".join(f"_{m.upper()}_" for m in sorted(missing))
                raise InvalidValue(f"log_format = client needs {fields}")
            return cls(template.pattern, template=template)
        assert fmt.pattern is not None
        return cls(fmt.pattern)

    def decode(self, line: str, now: float) -> Packet | None:
        groups = self._groups(line)
        if groups is None:
            return None
        src, port = groups.get("src"), _port(groups.get("dport"))
        source_port = _port(groups.get("sport"), 0)
        proto_text = (groups.get("proto") or "tcp").strip().lower()
        if not src or port is None or source_port is None or proto_text not in ("tcp", "udp"):
            return None
        if self.kernel and proto_text == "tcp":
            flags = (groups.get("rest") or "").split()
            if "SYN" not in flags or "ACK" in flags:
                return None  # not an initial SYN: an answer or part of an established flow
        try:
            address = ipaddress.ip_address(src.strip().split("%", 1)[0])  # no scope id
        except ValueError:
            return None
        if not (0 < port < 65536 and source_port < 65536):
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        proto: Proto = "udp" if proto_text == "udp" else "tcp"
        return Packet(now, str(address), port, proto, source_port)

    def _groups(self, line: str) -> Mapping[str, str | None] | None:
        """src, dport and, where the format has them, sport, proto and the TCP flags."""
        if self.template is not None:
            # The client's template names the source _CLIENT_ and the port _REMOTEPORT_.
            record = self.template.match(line)
            if record is None:
                return None
            return {"src": record.client, "dport": str(record.remoteport),
                    "sport": str(record.clientport) if record.clientport else None}  # fmt: skip
        if self.kernel:
            start = _kernel_start(line, self.prefix, self.anchored)
            return _kernel_fields(line, start) if start >= 0 else None
        assert self.pattern is not None
        m = self.pattern.search(line)
        return None if m is None else m.groupdict()
