"""Fuzzing every reader of untrusted input (issue 10): each raises only its own error
type, accepts what is genuine, and never accepts what it must refuse.

``READERS`` names each reader with a function from raw bytes to a verdict (``True``:
accepted, ``False``: refused quietly), the error types it is documented to raise, and
genuine inputs (seeds) it must accept. The function holds the reader's oracle: what
an accepted input must be (a frame's checksums, by the textbook algorithm; an SPA
grant only for a packet that was sealed with the key; a knock's ports exactly the
encoding of what was decoded; a replay file's digests exactly its intact records);
a violation is an ``AssertionError``, which no reader may raise. ``scripts/fuzz`` runs
the same table for minutes, coverage-guided with atheris where it is installed.

Readers that another test already feeds arbitrary bytes say so (``elsewhere``) and are
only fuzzed by ``scripts/fuzz`` and checked on their seeds here: the property tests
below cover the gaps. The first byte of an input often picks a variant (which log
format, which link header, which codec) so one byte string reaches all of them.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import ipaddress
import logging
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.packets import cooked, ether, internet_checksum, ipv4, ipv6, tcp, udp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aioknock.asyncio.follow import MAX_LINE
from aioknock.asyncio.kmsg import RECORD_MAX, record_text
from aioknock.asyncio.replayfile import LEGACY_MAGIC, MAGIC, RECORD_SIZE, ReplayFile, record
from aioknock.cli.hosts import read_hosts_file
from aioknock.codec import spa
from aioknock.codec.ciphers import CryptCBC, Plain
from aioknock.codec.fields import KnockFormat, KnockInputs
from aioknock.codec.logtemplate import LogTemplate
from aioknock.codec.pipeline import Codec
from aioknock.codec.portspan import PortSpan
from aioknock.codec.sealed import DATA_BITS, LABELS, SealedCodec, SealedMessage, encode_plaintext
from aioknock.config.daemonsettings import DaemonSettings
from aioknock.config.entries import Block, Entry
from aioknock.config.files import read_file
from aioknock.config.fwknopconf import read_access_file, read_fwknoprc
from aioknock.config.general import read_general
from aioknock.config.loader import build_settings
from aioknock.config.settings import DEFAULT_FILEFORMAT, ClientSettings
from aioknock.daemon.frames import Link, decode_frame
from aioknock.daemon.fwknopd import ANY, SOURCE_ADDRESSES, SpaPackets, Stanza
from aioknock.daemon.logreader import LineReader
from aioknock.daemon.packet import Packet
from aioknock.daemon.recognizer import Grant, Refusal
from aioknock.daemon.replay import DIGEST_SIZE
from aioknock.daemon.sealedknocks import MAX_TAG_CHECKS, SealedKnocks
from aioknock.errors import AioknockError, ConfigError, InvalidValue, KnockError

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_700_000_000.0
SRC = "198.18.0.1"


@dataclass(frozen=True)
class Reader:
    """One reader of untrusted input, as the fuzzers call it."""

    name: str
    read: Callable[[bytes], bool]  # True: accepted; False or one of ``errors``: refused
    errors: tuple[type[Exception], ...]  # what it is documented to raise
    seeds: Callable[[], list[bytes]]  # genuine inputs, each of which it must accept
    max_size: int = 4096  # the longest input worth trying
    elsewhere: str = ""  # a test that already feeds it arbitrary bytes


def outcome(reader: Reader, data: bytes) -> str:
    """``accepted``, ``refused``, or the kind of the reader's own error it raised (see
    ``kind``). Anything else -- an oracle's AssertionError, a traceback-type exception
    -- propagates: that is a crash."""
    try:
        return "accepted" if reader.read(data) else "refused"
    except reader.errors as exc:
        message = str(exc)
        assert message and "\n" not in message, f"not a one-line message: {message!r}"
        return kind(exc)


_VARYING = re.compile(r"'[^']*'|\"[^\"]*\"|<[^>]*>|\[[^]]*\]|\([^)]*\)|[0-9]+|\S*[\\?]\S*")


def kind(exc: Exception) -> str:
    """An error's type and the first words of its message with what varies (numbers,
    quoted or bracketed text, this run's scratch folder) blanked: how many distinct
    refusals a fuzzer reached."""
    if isinstance(exc, ConfigError):
        text = exc.message
    elif isinstance(exc, KnockError):
        text = exc.reason
    else:
        text = str(exc)
    words = _VARYING.sub("_", text.replace(str(scratch()), "")).split()
    return f"{type(exc).__name__}: {' '.join(words[:8])}"


# ------------------------------------------------------------------- scratch files

_SCRATCH: list[Path] = []
KEY_LINE = "fuzz passphrase"
ACCESS_CONF = f"""\
SOURCE ANY
KEY {"k" * 20}
HMAC_KEY {"h" * 40}
OPEN_PORTS tcp/22, udp/53
FW_ACCESS_TIMEOUT 30
"""


def scratch() -> Path:
    """This process's folder for the files readers read: a key file and an access.conf
    that fuzzed config files may name (``k.key``, ``access.conf``), and the input."""
    if not _SCRATCH:
        folder = Path(tempfile.mkdtemp(prefix="aioknock-fuzz-"))
        atexit.register(shutil.rmtree, folder, True)
        _write(folder / "k.key", f"{KEY_LINE}\n".encode())
        _write(folder / "access.conf", ACCESS_CONF.encode())
        _SCRATCH.append(folder)
    return _SCRATCH[0]


def _write(path: Path, data: bytes) -> Path:
    """``data`` as a fresh regular file of mode 600 (a reader may have renamed or
    replaced the last one)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def input_file(name: str, data: bytes) -> Path:
    return _write(scratch() / name, data)


# ----------------------------------------------------------------------- log lines

LINE_READERS = (
    LineReader.build("kernel"),
    LineReader.build("kernel", prefix="knock: "),
    LineReader.build("kernel", prefix="knock: ", anchored=True),  # /dev/kmsg
    LineReader.build("client", DEFAULT_FILEFORMAT),
    LineReader.build("client", "_DATE_ _CLIENT_:_CLIENTPORT_ > _REMOTE_:_REMOTEPORT_ (_CLIENT_)"),
    LineReader.build(r"(?P<src>\S+) (?P<dport>\S+) (?P<sport>\S*) ?(?P<proto>\S*)"),
)
KERNEL_LINE = (
    "Nov 26 14:27:02 gw kernel: [81.5] {prefix}IN=eth0 OUT= MAC=02:00:00:00:00:02:02:00:00"
    ":00:00:01:08:00 SRC={src} DST=198.18.0.2 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=4242 DF "
    "PROTO={proto} SPT=40000 DPT=745 {tail}"
)
TCP_TAIL = "WINDOW=64240 RES=0x00 SYN URGP=0"


def check_packet(packet: Packet) -> None:
    """What every reader's Packet must be: a canonical address, ports in range."""
    ip = ipaddress.ip_address(packet.src)
    assert str(ip) == packet.src
    assert not (isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped or ip.scope_id))
    assert 0 < packet.dport < 65536 and 0 <= packet.sport < 65536
    assert packet.proto in ("tcp", "udp") and packet.now == NOW


def read_log_line(data: bytes) -> bool:
    """The first byte picks the format; the rest is lines, decoded as the log follower
    decodes them (UTF-8, errors replaced)."""
    reader = LINE_READERS[data[0] % len(LINE_READERS)] if data else LINE_READERS[0]
    accepted = False
    for line in data[1:].decode("utf-8", "replace").split("\n"):
        packet = reader.decode(line.rstrip("\r"), NOW)
        if packet is None:
            continue
        check_packet(packet)
        if reader.kernel:
            assert f"{reader.prefix}IN=" in line and "SRC=" in line and "DPT=" in line
            assert packet.proto == "udp" or "SYN" in line.split()
        accepted = True
    return accepted


def log_line_seeds() -> list[bytes]:
    seeds: list[bytes] = []
    for i, reader in enumerate(LINE_READERS):
        if reader.template is not None:
            line = reader.template.format(when=NOW, client=SRC, remote="198.18.0.2",
                                          clientport=40000, remoteport=745)  # fmt: skip
        elif reader.kernel:
            prefix = reader.prefix
            line = KERNEL_LINE.format(prefix=prefix, src=SRC, proto="TCP", tail=TCP_TAIL)
            if reader.anchored:
                line = line[line.index(prefix) :]
        else:
            line = f"{SRC} 745 40000 udp"
        seeds.append(bytes([i]) + line.encode())
    v6 = KERNEL_LINE.format(prefix="", src="2001:2::1", proto="UDP", tail="LEN=8")
    return [*seeds, b"\0" + v6.encode()]


# --------------------------------------------------------------------- log formats


SAMPLE_LINES = [
    KERNEL_LINE.format(prefix="", src=SRC, proto="TCP", tail=TCP_TAIL),
    f"{SRC} 745 40000 tcp",
    "Nov 26 14:27:02 198.18.0.1:40000 > 198.18.0.2:745 (198.18.0.1)",
]


def read_log_format(data: bytes) -> bool:
    """``log_format`` (kernel, client or a pattern) or, with the first byte odd, the
    ``fileformat`` template of log_format = client: InvalidValue for what cannot be
    used, on one printable line; a reader made of ours reads lines without raising."""
    text = data[1:].decode("utf-8", "replace")
    try:
        if data[:1] and data[0] & 1:
            reader = LineReader.build("client", text)
            assert {"client", "remoteport"} <= LogTemplate(text).fields()
        else:
            reader = LineReader.build(text, DEFAULT_FILEFORMAT)
    except InvalidValue as exc:
        assert str(exc).isprintable(), exc  # what the pattern holds is shown escaped
        raise
    if reader.pattern is not None and reader.template is None:
        return True  # the admin's own expression: how it backtracks on a line is theirs
    for line in SAMPLE_LINES:
        packet = reader.decode(line, NOW)
        if packet is not None:
            check_packet(packet)
    return True


def log_format_seeds() -> list[bytes]:
    formats = ["kernel", "client", r"SRC=(?P<src>\S+) .* DPT=(?P<dport>\d+)"]
    return [b"\0" + f.encode() for f in formats] + [
        b"\1" + DEFAULT_FILEFORMAT.encode(),
        b"\1_DATE_ _CLIENT_:_CLIENTPORT_ > _REMOTE_:_REMOTEPORT_ (_CLIENT_)",
    ]


# -------------------------------------------------------------------------- frames

LINKS: tuple[Link, ...] = ("ip", "ethernet", "cooked")


def read_frame(data: bytes) -> bool:
    """First byte: the link (bits 0-1), captured on loopback (bit 2), transport checksum
    not verified (bit 3, offload); the rest is the frame."""
    mode = data[0] if data else 0
    link, loopback, checksum = LINKS[mode % 4 % 3], bool(mode & 4), not mode & 8
    frame = data[1:]
    packet = decode_frame(frame, NOW, link=link, loopback=loopback,
                          transport_checksum=checksum)  # fmt: skip
    if packet is None:
        return False
    check_frame(frame, link, packet, loopback=loopback, checksum=checksum)
    return True


def check_frame(
    frame: bytes, link: Link, packet: Packet, *, loopback: bool, checksum: bool
) -> None:
    """What the kernel would have checked before a socket saw the frame, redone here
    from the RFCs with the textbook checksum (tests/helpers/packets.py)."""
    start = {"ip": 0, "cooked": 16, "ethernet": 14}[link]
    while link == "ethernet" and frame[start - 2 : start] in (b"\x81\x00", b"\x88\xa8"):
        start += 4
    ip = frame[start:]
    if ip[0] >> 4 == 4:
        ihl, total = (ip[0] & 0x0F) * 4, int.from_bytes(ip[2:4], "big")
        assert 20 <= ihl <= total <= len(ip) and internet_checksum(ip[:ihl]) == 0
        assert not int.from_bytes(ip[6:8], "big") & 0x3FFF  # no fragment
        proto, src, dst = ip[9], ip[12:16], ip[16:20]
        segment: bytes | None = ip[ihl:total]
        pseudo = src + dst + bytes([0, proto])
    else:
        assert ip[0] >> 4 == 6
        end = 40 + int.from_bytes(ip[4:6], "big")
        assert 40 < end <= len(ip)
        proto, src, dst = ip[6], ip[8:24], ip[24:40]
        segment = ip[40:end] if proto in (6, 17) else None  # behind extension headers
        pseudo = src + dst + bytes([0, 0, 0, proto])
    source, target = (_unmapped(ipaddress.ip_address(a)) for a in (src, dst))
    assert packet.src == str(source) and packet.dst == str(target)
    if not loopback:
        assert not _martian(src, dst), (source, target)
    if segment is None:
        return
    assert packet.proto == {6: "tcp", 17: "udp"}[proto]
    assert (packet.sport, packet.dport) == struct.unpack(">HH", segment[:4])
    if proto == 6:
        assert segment[13] & 0x02 and not segment[13] & 0x10  # SYN, no ACK
        assert 20 <= (segment[12] >> 4) * 4 <= len(segment)
        covered = segment
    else:
        covered = segment[: int.from_bytes(segment[4:6], "big")]
        assert len(covered) >= 8 and packet.payload == covered[8:]
    if checksum and not (proto == 17 and covered[6:8] == b"\0\0" and len(src) == 4):
        length = len(covered).to_bytes(2 if len(src) == 4 else 4, "big")
        assert internet_checksum(pseudo + length + covered) == 0


def _unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> object:
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip


def _martian(src: bytes, dst: bytes) -> bool:
    if len(src) == 4:
        return src[0] in (0, 127) or src[0] >= 224 or dst[0] in (0, 127)
    zero, one = bytes(16), bytes(15) + b"\1"
    mapped = src[:12] == bytes(10) + b"\xff\xff"
    return src in (zero, one) or src[0] == 0xFF or mapped or dst in (zero, one)


def frame_seeds() -> list[bytes]:
    v4_syn = ipv4(SRC, tcp(40000, 745))
    v4_udp = ipv4(SRC, udp(40000, 62201, b"payload"), 17)
    v6_syn = ipv6("2001:2::1", tcp(40000, 745))
    v6_udp = ipv6("2001:2::1", udp(40000, 62201, b"payload"), 17)
    return [
        b"\0" + v4_syn,
        b"\0" + v6_udp,
        b"\1" + ether(v4_udp, 0x0800),
        b"\1" + ether(v6_syn, 0x86DD, (0x8100,)),
        b"\2" + cooked(v6_syn, 0x86DD),
        b"\4" + ipv4("127.0.0.1", tcp(40000, 745), dst="127.0.0.1"),  # loopback
        b"\x08" + ipv4(SRC, tcp(40000, 745), transport_sum=False),  # checksum offloaded
    ]


# ---------------------------------------------------------------- SPA datagrams

SPA_PORT = 62201
SPA_KEYS = spa.SpaKeys(b"fuzz encryption key", b"fuzz hmac key " * 4)
STANZAS = (
    Stanza(ANY, spa.SpaKeys(b"another key", b"another hmac key", "sha512"), where="other:1"),
    Stanza(ANY, SPA_KEYS, open_ports=(("tcp", 22), ("udp", 53)), where="fuzz:1"),
)


def spa_messages() -> list[spa.SpaMessage]:
    rand, stamp = "1234567890123456", int(NOW)
    return [
        spa.SpaMessage(SRC, (("tcp", 22),), stamp, rand=rand),
        spa.SpaMessage("0.0.0.0", (("tcp", 22), ("udp", 53)), stamp, "alice", 60, rand),
        spa.SpaMessage("2001:2::1", (("udp", 53),), stamp - 100, rand=rand, digest_type="sha512"),
    ]


@functools.cache
def genuine_spa() -> frozenset[bytes]:
    return frozenset(spa.build(m, SPA_KEYS, b"8 bytes!") for m in spa_messages())


def judge_spa(payload: bytes) -> Grant | Refusal | None:
    """The daemon's verdict on one datagram from SRC, with a fresh replay memory."""
    packets = SpaPackets(STANZAS, port=SPA_PORT, max_age=120)
    verdicts = packets.receive(Packet(NOW, SRC, SPA_PORT, "udp", 40000, payload=payload))
    assert len(verdicts) <= 1
    verdict = verdicts[0] if verdicts else None
    assert verdict is None or isinstance(verdict, Grant | Refusal), verdict
    return verdict


def read_spa(data: bytes) -> bool:
    """A datagram as received: only a packet sealed with the stanza's keys is granted."""
    verdict = judge_spa(data)
    if not isinstance(verdict, Grant):
        return False
    assert data in genuine_spa(), "granted a packet that was never sealed with the key"
    return True


def read_spa_plaintext(data: bytes) -> bool:
    """What an SPA packet holds once its HMAC verified and it decrypted: arbitrary here,
    then sealed with the stanza's keys so that the daemon reads it whole. With the first
    byte odd, the inner digest is put right, to reach the fields behind it."""
    body = data[1:]
    if data[:1] and data[0] & 1:
        body += b":" + spa.b64(hashlib.sha256(body).digest()).encode()
    try:
        msg: spa.SpaMessage | None = spa.decode_message(body)
    except KnockError:
        msg = None
    if msg is not None:
        again = spa.decode_message(spa.encode_message(msg))
        assert again.access == msg.access and again.allow == msg.allow
        assert (again.username, again.timestamp, again.rand) == (msg.username, msg.timestamp,
                                                                 msg.rand)  # fmt: skip
        assert again.client_timeout == msg.client_timeout and again.version == msg.version
    verdict = judge_spa(spa.seal(body, SPA_KEYS, bytes(8)))
    if not isinstance(verdict, Grant):
        return False
    assert msg is not None and abs(msg.timestamp - NOW) <= 120
    assert set(msg.access) <= {("tcp", 22), ("udp", 53)}  # the stanza's OPEN_PORTS
    assert verdict.address == (SRC if msg.allow in SOURCE_ADDRESSES else msg.allow)
    assert verdict.ports == tuple((port, proto) for proto, port in msg.access)
    return True


def spa_plaintext_seeds() -> list[bytes]:
    return [b"\0" + spa.encode_message(m) for m in spa_messages()]


# ----------------------------------------------------------- the prototype's knock

KNOCK = "CLIENT,PORT,RAND,THISMINUTE,CHECKSUM"


def _codec(knock: str, span: str, cipher: str = "", iv: bool = True, portbytes: int = 2) -> Codec:
    crypto = CryptCBC(cipher, b"fuzz passphrase", iv=iv) if cipher else Plain()
    return Codec(KnockFormat.parse(knock, portbytes=portbytes), crypto, PortSpan.parse(span))


CODECS = (
    _codec(KNOCK, "745-1000"),  # the default knock, unencrypted
    _codec(KNOCK, "745-1000", "Blowfish"),  # and encrypted
    _codec("PORT,FLAG0,CHECKSUM", "20000-20015", "CAST5", iv=False),
    _codec("PORT,PORT,CHECKSUM,RAND,CHECKSUM", "1024-33791", portbytes=1),  # 15 bits a port
    _codec("CLIENT,PORT,THISSECOND", "40000,40001", "DES_EDE3"),  # one bit a port
)


def read_knock(data: bytes) -> bool:
    """First byte: the codec, and whether the ports are raw 16-bit numbers or indexes
    into its span (then, with bit 1 of the quotient, as many as a knock has)."""
    choice = data[0] if data else 0
    codec, mode = CODECS[choice % len(CODECS)], choice // len(CODECS)
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(1, len(data) - 1, 2)]
    ports = words
    if mode & 1:
        span = codec.span.ports
        ports = [span[w % len(span)] for w in words]
        if mode & 2:
            ports = (ports + [span[0]] * codec.knock_length)[: codec.knock_length]
    decoded = codec.decode(ports)
    # Accepted: the ports are exactly the encoding of what was decoded, and nothing in
    # the payload was left unread (one spelling of each knock).
    assert codec.span.encode(decoded.payload) == ports
    plain = codec.cipher.decrypt(decoded.payload)
    if isinstance(codec.cipher, CryptCBC):
        iv = decoded.payload[8:16] if codec.cipher.iv else b""
        assert codec.cipher.encrypt(plain, lambda n: iv) == decoded.payload
    sums = [plain[i] for i in _offsets(codec.format, "CHECKSUM")]
    assert all(s == (sum(plain) - sum(sums)) % 256 for s in sums)
    return True


def _offsets(fmt: KnockFormat, name: str) -> Iterator[int]:
    at = 0
    for field in fmt.fields:
        if field == name:
            yield at
        at += fmt.width(field)


def knock_seeds() -> list[bytes]:
    seeds = []
    for i, codec in enumerate(CODECS):
        inputs = KnockInputs(SRC, 22, {0: 7}, 99)
        plan = codec.build(inputs, NOW, lambda n: b"\x5a" * n)
        indexes = [codec.span.ports.index(p) for p in plan.ports]
        seeds.append(bytes([i + len(CODECS) * 3]) + b"".join(x.to_bytes(2, "big") for x in indexes))
    return seeds


# -------------------------------------------------------------------- config files


def _entries(entries: list[Entry]) -> Iterator[Entry]:
    """Every entry, those in blocks too (without recursion: blocks nest deep)."""
    todo = list(reversed(entries))
    while todo:
        entry = todo.pop()
        yield entry
        if isinstance(entry.value, Block):
            todo += reversed(entry.value.entries)


def read_general_file(data: bytes) -> bool:
    """A Config::General file (includes resolve in the scratch folder)."""
    path = input_file("fuzz.conf", data)
    lines = data.count(b"\n") + 1
    for entry in _entries(read_general(path)):
        assert entry.line >= 1 and (entry.source != str(path) or entry.line <= lines)
    return True


def read_toml_file(data: bytes) -> bool:
    """A TOML config file as a layer; the first byte picks the client's or the daemon's
    table."""
    table = DaemonSettings if data[:1] and data[0] & 1 else ClientSettings
    layer = read_file(input_file("fuzz.toml", data[1:]), table)
    assert set(layer.values) == set(layer.where)
    return True


def read_settings(data: bytes) -> bool:
    """A whole configuration: the first byte picks client or daemon (bit 0) and
    Config::General or TOML (bit 1); every value read by its kind, key_file and
    access_file read, the settings checked."""
    table = DaemonSettings if data[:1] and data[0] & 1 else ClientSettings
    name = "fuzz.toml" if data[:1] and data[0] & 2 else "fuzz.conf"
    made = build_settings(table, path=input_file(name, data[1:]), overrides={}, sending=False)
    assert isinstance(made, table)
    return True


def settings_seeds() -> list[bytes]:
    client = (ROOT / "conf" / "knockclient.conf").read_bytes()
    daemon = (ROOT / "conf" / "knockdaemon.conf").read_bytes()
    daemon = daemon.replace(b"/etc/aioknock/knock.key", b"k.key")
    spa_daemon = b"runmode = network\naccess_file = access.conf\nkey_file = k.key\nencrypt = yes\n"
    doors = b"encoded = no\n<door ssh>\n  sequence = 7000,8000:udp,9000\n  port = 22\n</door>\n"
    toml = b'port = 2222\nencrypt = true\nkey_file = "k.key"\n[host."db*"]\nport = 5432\n'
    return [b"\0" + client, b"\1" + daemon, b"\1" + spa_daemon, b"\1" + doors, b"\2" + toml]


def general_seeds() -> list[bytes]:
    block = b'a = 1\n<door ssh>\n  b "two words" # c\n  d <<EOF\n  x\n  EOF\n</door>\n'
    return [block, b"e = \\\n  continued\n/* a\n comment */\nf 2\n"]


def toml_seeds() -> list[bytes]:
    return [b"\0port = 22\nknock = 'PORT,CHECKSUM'\n[host.'a*']\nport = 2\n",
            b'\1encoded = false\n[door.ssh]\nsequence = "7000,8000"\nport = 22\n']  # fmt: skip


# ------------------------------------------------------------------- fwknop files


def read_access(data: bytes) -> bool:
    assert read_access_file(input_file("fuzz-access.conf", data))
    return True


def read_rc(data: bytes) -> bool:
    """A .fwknoprc; the stanza asked for is ``s``."""
    layer = read_fwknoprc(input_file("fuzzrc", data), "s")
    assert layer.values["protocol"] == "spa"
    return True


def access_seeds() -> list[bytes]:
    other = (b"SOURCE 198.18.0.0/15, 2001:2::/48\nKEY_BASE64 a2tra2tra2tra2tr\n"
             b"HMAC_KEY_BASE64 aGhoaGhoaGhoaGhoaGhoaGho\nHMAC_DIGEST_TYPE SHA512\n"
             b"REQUIRE_USERNAME alice\nACCESS_EXPIRE 12/31/2030\n")  # fmt: skip
    return [ACCESS_CONF.encode(), other]


def rc_seeds() -> list[bytes]:
    return [b"[default]\nSPA_SERVER_PORT 62201\n\n[s]\nSPA_SERVER 198.18.0.2\nACCESS tcp/22\n"
            b"KEY_BASE64 a2tra2tra2tra2tr\nHMAC_KEY_BASE64 aGhoaGhoaGhoaGhoaGhoaGho\n"
            b"USE_HMAC Y\nALLOW_IP source\n"]  # fmt: skip


# --------------------------------------------------------------------- hosts files

_HOST_BASE: list[ClientSettings] = []


def read_hosts(data: bytes) -> bool:
    """A hosts file; with the first byte odd, each line's settings are made whole at
    once, as ``aioknock run --hosts`` does."""
    if not _HOST_BASE:
        _HOST_BASE.append(ClientSettings())
    base = _HOST_BASE[0] if data[:1] and data[0] & 1 else None
    targets = read_hosts_file(str(input_file("hosts", data[1:])), base)
    assert targets
    for target in targets:
        host = target if isinstance(target, str) else target[0]
        assert host.isprintable() and not any(c.isspace() or c in "#=" for c in host), host
    return True


def hosts_seeds() -> list[bytes]:
    text = b"# fleet\nweb1\n  db1.example port=2222 FLAG0=3 # db\n127.0.0.1 timeout=0.5\n"
    return [b"\0" + text, b"\1" + text]


# ----------------------------------------------------------------------- key files


def read_key(data: bytes) -> bool:
    """A key file named by ``key_file``, read as the settings read it for an encrypted
    knock: its first line is the passphrase."""
    path = input_file("fuzz.key", data)
    made = build_settings(ClientSettings, path=None, overrides={"key_file": str(path),
                          "encrypt": "yes"}, sending=False)  # fmt: skip
    line = data.decode("utf-8").split("\n", 1)[0]
    # Its line ending (LF, CR LF) is not part of it; nothing after the first LF is.
    assert made.key and line.startswith(made.key) and "\n" not in made.key
    assert isinstance(made.codec.cipher, CryptCBC)
    return True


def key_seeds() -> list[bytes]:
    return [f"{KEY_LINE}\n".encode(), b"no line end", "pässphrase \r\nsecond line\n".encode()]


# --------------------------------------------------------------------- replay file

REPLAY_LOG = logging.getLogger("aioknock.daemon")


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def read_replay(data: bytes) -> bool:
    """The replay file: first byte = the memory's size (bits 0-2, plus one) and whether
    the daemon may write (bit 7); the rest is the file. Refused (ConfigError, the file
    left as it is) unless it starts with the magic; else the digests loaded are exactly
    the intact records among the newest, and any damage is logged as an error."""
    mode = data[0] if data else 0
    limit, write, body = mode % 8 + 1, bool(mode & 0x80), data[1:]
    path = input_file("replay", body)
    errors = _Errors()
    REPLAY_LOG.addHandler(errors)
    try:
        store = ReplayFile.load(str(path), limit, write=write)
    except ConfigError:
        assert body and body[: len(MAGIC)] not in (MAGIC, LEGACY_MAGIC)
        assert path.read_bytes() == body  # not ours: left alone
        raise
    finally:
        REPLAY_LOG.removeHandler(errors)
    width = RECORD_SIZE if body.startswith(MAGIC) else DIGEST_SIZE
    total = (len(body) - len(MAGIC)) // width if body else 0
    newest = body[len(MAGIC) + (total - min(total, limit)) * width : len(MAGIC) + total * width]
    chunks = [newest[i : i + width] for i in range(0, len(newest), width)]
    good = [c[:DIGEST_SIZE] for c in chunks if width == DIGEST_SIZE or record(c[:DIGEST_SIZE]) == c]
    assert list(store.digests) == good and store.damaged == len(chunks) - len(good)
    assert errors.count >= bool(store.damaged) + (not body)  # never forgotten silently
    if write:  # written anew where it was not as the daemon writes it
        again = ReplayFile.load(str(path), limit, write=False)
        assert list(again.digests) == good and again.damaged == 0
        assert path.stat().st_size == len(MAGIC) + len(good) * RECORD_SIZE
    return True


def replay_seeds() -> list[bytes]:
    digests = [hashlib.sha256(bytes([i])).digest()[:DIGEST_SIZE] for i in range(5)]
    ours = MAGIC + b"".join(map(record, digests))
    return [b"\3" + ours, b"\x84" + ours, b"\7" + LEGACY_MAGIC + b"".join(digests)]


# ----------------------------------------------------------------- kernel records


def read_kmsg(data: bytes) -> bool:
    """A /dev/kmsg record: only the kernel's own (facility 0) messages are read."""
    text = record_text(data)
    if text is None:
        return False
    header = data.split(b";", 1)[0].split(b",")
    assert len(header) >= 4 and int(header[0]) < 8 and "\n" not in text
    return True


def kmsg_seeds() -> list[bytes]:
    line = KERNEL_LINE.format(prefix="knock: ", src=SRC, proto="TCP", tail=TCP_TAIL)
    return [b"4,1234,5678901,-;" + line[line.index("knock: ") :].encode() + b"\n SUBSYSTEM=net"]


# ------------------------------------------------------------------ sealed knocks

SEALED_KEY = bytes(range(32))
SEALED = (SealedCodec(SEALED_KEY, "host-a"), SealedCodec(SEALED_KEY, "host-a", tag_bits=128))
OTHER_HOST = SealedCodec(SEALED_KEY, "host-b")  # the same key: a fleet sharing one
NONCE = bytes(7)


def sealed_messages() -> list[SealedMessage]:
    stamp = int(NOW)
    return [
        SealedMessage(stamp, 22),
        SealedMessage(stamp, 3306, "udp", SRC, (53,), ((0, 7),)),
        SealedMessage(stamp, 443, address="2001:2::1", flags=((1, 2), (9, 255))),
    ]


@functools.cache
def genuine_sealed() -> frozenset[tuple[int, ...]]:
    return frozenset(tuple(c.build(m, NONCE, SRC)) for c in SEALED for m in sealed_messages())


def read_sealed(data: bytes) -> bool:
    """First byte: the codec (bit 0: a 128-bit tag) and what follows (bits 1-2): 16-bit
    ports (0), 11-bit chunks sent with the labels of a knock's SYNs (1, 3), or a
    plaintext sealed with the key (2), so that what is behind the tag is read too."""
    mode = data[0] if data else 0
    codec, how, body = SEALED[mode & 1], mode >> 1 & 3, data[1:]
    if how == 2:
        ports = codec.ports(codec.seal_plaintext(body, NONCE, SRC))
        msg = codec.decode(ports, SRC)
        assert encode_plaintext(msg) == body  # read strictly: one spelling
        with pytest.raises(KnockError):  # bound to its server: host-b opens nothing
            OTHER_HOST.decode(ports, SRC)
        return True
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(1, len(data) - 1, 2)]
    if how:
        start = codec.span_start
        words = [start + ((i % LABELS) << DATA_BITS | w % (1 << DATA_BITS)) for i, w in
                 enumerate(words)]  # fmt: skip
    codec.decode(words, SRC)
    assert tuple(words) in genuine_sealed(), "accepted a knock never sealed with the key"
    return True


def sealed_seeds() -> list[bytes]:
    seeds = []
    for i, codec in enumerate(SEALED):
        for msg in sealed_messages():
            chunks = [(p - codec.span_start) % (1 << DATA_BITS)
                      for p in codec.build(msg, NONCE, SRC)]  # fmt: skip
            seeds.append(bytes([i | 2]) + b"".join(c.to_bytes(2, "big") for c in chunks))
            seeds.append(bytes([i | 4]) + encode_plaintext(msg))
    return seeds


STREAM_KNOCK = SEALED[0].build(SealedMessage(int(NOW), 22), NONCE, SRC)


def read_sealed_stream(data: bytes) -> bool:
    """SYNs from one source into the daemon's sealed-knock recognizer: each 16-bit word
    a port of the span (its low 15 bits), or, with the first byte odd and the word's top
    bit set, the next SYN of a genuine knock. At most K tag checks per SYN; a grant only
    for the genuine knock, once."""
    recognizer = SealedKnocks(SEALED[0], knock_timeout=2.0, max_sources=100,
                              time_tolerance=30.0, allow_nat=False)  # fmt: skip
    genuine = iter(STREAM_KNOCK) if data[:1] and data[0] & 1 else iter(())
    sent, verdicts = 0, []
    for i in range(1, len(data) - 1, 2):
        word = int.from_bytes(data[i : i + 2], "big")
        port = next(genuine, None) if word >> 15 else None
        sent += port is not None
        port = SEALED[0].span_start + word % (1 << 15) if port is None else port
        syn = Packet(NOW + i * 0.001, SRC, port, "tcp", 1024 + i)
        verdicts += recognizer.receive(syn)
        assert recognizer.most_checks <= MAX_TAG_CHECKS
    verdicts += recognizer.handle_timer(NOW + 100)
    granted = [v for v in verdicts if isinstance(v, Grant)]
    assert len(granted) <= 1 and (not granted or sent == len(STREAM_KNOCK))
    assert all(g.address == SRC and g.ports == ((22, "tcp"),) for g in granted)
    return bool(granted)


def sealed_stream_seeds() -> list[bytes]:
    knock = [0x8000] * len(STREAM_KNOCK)
    strays = [*knock[:5], 3 << 11 | 99, *knock[5:9], 9 << 11, *knock[9:]]
    return [b"\1" + b"".join(w.to_bytes(2, "big") for w in words) for words in (knock, strays)]


# --------------------------------------------------------------------- the table

FILE_ELSEWHERE = "tests/test_fwknop_files.py"
SEALED_ELSEWHERE = "tests/test_sealed.py"
STREAM_ELSEWHERE = "tests/test_sealed_recognizer.py"
READERS_TODAY = [
    Reader("log-line", read_log_line, (), log_line_seeds, max_size=MAX_LINE),
    Reader("log-format", read_log_format, (InvalidValue,), log_format_seeds, max_size=512),
    Reader("frame", read_frame, (), frame_seeds, max_size=1600),
    Reader("spa-datagram", read_spa, (), lambda: sorted(genuine_spa()), max_size=1600),
    Reader("spa-plaintext", read_spa_plaintext, (), spa_plaintext_seeds, max_size=1000),
    Reader("knock", read_knock, (KnockError,), knock_seeds, max_size=1200),
    Reader("config-general", read_general_file, (ConfigError,), general_seeds),
    Reader("config-toml", read_toml_file, (ConfigError,), toml_seeds),
    Reader("settings", read_settings, (ConfigError,), settings_seeds, max_size=8192),
    Reader("access-conf", read_access, (ConfigError,), access_seeds, elsewhere=FILE_ELSEWHERE),
    Reader("fwknoprc", read_rc, (ConfigError,), rc_seeds, elsewhere=FILE_ELSEWHERE),
    Reader("hosts-file", read_hosts, (ConfigError,), hosts_seeds),
    Reader("key-file", read_key, (ConfigError,), key_seeds, max_size=512),
    Reader("replay-file", read_replay, (ConfigError,), replay_seeds, max_size=1024),
    Reader("kmsg-record", read_kmsg, (), kmsg_seeds, max_size=RECORD_MAX),
    Reader("sealed-knock", read_sealed, (KnockError,), sealed_seeds, 600, SEALED_ELSEWHERE),
    Reader("sealed-stream", read_sealed_stream, (), sealed_stream_seeds, 400, STREAM_ELSEWHERE),
]

# -------------------------------------------------- readers still being written
#: Readers of modules still being written join the table here, in one line each, as
#: those above: ``Reader(name, read, errors, seeds)``, with ``read`` deciding its bytes
#: and asserting what an accepted input must be. (The sealed knock's, which this place
#: was kept for, is above: codec/sealed.py and daemon/sealedknocks.py exist now.)
PENDING: list[Reader] = []

READERS = [*READERS_TODAY, *PENDING]
BY_NAME = {reader.name: reader for reader in READERS}
assert len(BY_NAME) == len(READERS)


# ------------------------------------------------------------------ the strategy


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes], max_size: int) -> bytes:
    """A genuine input with a few bytes flipped, inserted, deleted or spliced from
    another seed: most of it still well-formed, so the reader's deeper checks run."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.integers(0, 3))
        if how == 0 and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == 1:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how == 2:
            del data[at : at + draw(st.integers(1, 16))]
        else:
            other = draw(st.sampled_from(seeds))
            cut = draw(st.integers(0, len(other)))
            data[at:] = other[cut:]
    return bytes(data[:max_size])


def inputs(reader: Reader) -> st.SearchStrategy[bytes]:
    seeds = reader.seeds()
    return st.one_of(st.binary(max_size=min(reader.max_size, 600)),
                     mutated(seeds, reader.max_size))  # fmt: skip


# ------------------------------------------------------------------------- tests


@pytest.fixture(autouse=True, scope="module")
def _no_environment() -> Iterator[None]:
    """No AIOKNOCK_* variable of the caller's reaches the settings the readers build."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith("AIOKNOCK_"):
                patch.delenv(name)
        yield


@pytest.mark.parametrize("reader", READERS, ids=[r.name for r in READERS])
def test_genuine_inputs_are_accepted(reader: Reader) -> None:
    for seed in reader.seeds():
        assert outcome(reader, seed) == "accepted", seed


FUZZED = [r for r in READERS if not r.elsewhere]
SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=SLOW)


@pytest.mark.parametrize("reader", FUZZED, ids=[r.name for r in FUZZED])
@FUZZ
@given(data=st.data())
def test_any_input_is_accepted_soundly_or_refused_with_the_readers_error(
    reader: Reader, data: st.DataObject
) -> None:
    outcome(reader, data.draw(inputs(reader), label="input"))


def test_every_reader_of_the_brief_is_in_the_table() -> None:
    assert set(BY_NAME) >= {
        "log-line", "log-format", "frame", "spa-datagram", "knock", "config-general",
        "config-toml", "access-conf", "fwknoprc", "hosts-file", "key-file", "replay-file",
        "sealed-knock",
    }  # fmt: skip
    assert all(reader.errors == () or issubclass(e, AioknockError) for reader in READERS
               for e in reader.errors)  # fmt: skip


def reference_payload(codec: Codec, ports: list[int]) -> bytes | None:
    """What an unencrypted knock's ports carry, read bit by bit as the manual describes
    it; None for what the daemon must refuse: a wrong count, a port outside the span or
    past the last group's range, a checksum that does not match, a field named twice
    with two values (RAND excepted)."""
    span, length = list(codec.span.ports), codec.payload_length
    if len(ports) != codec.knock_length or not set(ports) <= set(span):
        return None
    rest, bits = 8 * length % codec.span.bits, ""
    for i, port in enumerate(ports):
        width = rest if rest and i == len(ports) - 1 else codec.span.bits
        if span.index(port) >> width:
            return None
        bits += format(span.index(port), f"0{width}b")
    payload = int(bits, 2).to_bytes(length, "big")
    seen: dict[str, bytes] = {}
    at, sums = 0, []
    for name in codec.format.fields:
        chunk, at = payload[at : at + codec.format.width(name)], at + codec.format.width(name)
        if name == "CHECKSUM":
            sums.append(chunk[0])
        elif seen.setdefault(name, chunk) != chunk and name != "RAND":
            return None
    if any(s != (sum(payload) - sum(sums)) % 256 for s in sums):
        return None
    return payload


PLAIN = [codec for codec in CODECS if isinstance(codec.cipher, Plain)]


@FUZZ
@given(codec=st.sampled_from(PLAIN), data=st.data())
def test_an_unencrypted_knock_is_accepted_exactly_when_well_formed(
    codec: Codec, data: st.DataObject
) -> None:
    """Without a cipher nothing hides a defect: the codec accepts exactly the port lists
    the reference reading accepts, and reads the same bytes from them."""
    payload = bytearray(data.draw(st.binary(min_size=codec.payload_length,
                                            max_size=codec.payload_length)))  # fmt: skip
    sums = list(_offsets(codec.format, "CHECKSUM"))
    if data.draw(st.booleans()):  # its checksums right
        total = (sum(payload) - sum(payload[i] for i in sums)) % 256
        for i in sums:
            payload[i] = total
    ports = codec.span.encode(bytes(payload))
    for _ in range(data.draw(st.integers(0, 2))):  # and then changed, maybe
        at = data.draw(st.integers(0, len(ports)))
        port = data.draw(st.sampled_from(codec.span.ports) | st.integers(0, 65535))
        ports[at:at + data.draw(st.integers(0, 1))] = [port]  # fmt: skip
    try:
        got: bytes | None = codec.decode(ports).payload
    except KnockError:
        got = None
    assert got == reference_payload(codec, ports)


@FUZZ
@given(
    packet=st.sampled_from(sorted(genuine_spa())),
    data=st.data(),
)
def test_an_spa_packet_opens_once_and_never_when_changed(
    packet: bytes, data: st.DataObject
) -> None:
    """A genuine packet is granted, and refused when it comes again; with one character
    replaced by another of base64's, cut short or extended it opens nothing."""
    packets = SpaPackets(STANZAS, port=SPA_PORT, max_age=120)
    seen = Packet(NOW, SRC, SPA_PORT, "udp", 40000, payload=packet)
    assert isinstance(packets.receive(seen)[0], Grant)
    again = packets.receive(seen)
    assert isinstance(again[0], Refusal) and again[0].reason == "replayed SPA packet"
    at = data.draw(st.integers(0, len(packet) - 1))
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    other = data.draw(st.sampled_from(alphabet).filter(lambda c: c != packet[at]))
    changed = data.draw(st.sampled_from([
        packet[:at] + bytes([other]) + packet[at + 1 :], packet[:at], packet + bytes([other]),
    ]))  # fmt: skip
    assert not isinstance(judge_spa(changed), Grant)


# --------------------------------------------------------- what fuzzing found


@pytest.mark.parametrize("pattern", ["(?\nP<src>\\S+) (?P<dport>\\d+)", "(?\x1b[2J", "(?P\0"])
def test_a_pattern_that_does_not_compile_is_one_printable_line(pattern: str) -> None:
    """Found by scripts/fuzz: re.error's message quotes the pattern's character (a
    line end, an escape sequence) and adds a line of its own for a pattern of several
    lines (a here-doc log_format); the error was two lines, or rewrote the terminal."""
    with pytest.raises(InvalidValue, match=r"^not a regular expression: unknown extension") as err:
        LineReader.build(pattern)
    assert str(err.value).isprintable()
    with pytest.raises(ConfigError) as config:
        DaemonSettings.of(log_format=pattern)
    assert str(config.value).isprintable() and config.value.key == "log_format"


# ------------------------------------------- found by reasoning, in others' modules
# Inputs past the fuzzers' sizes: Python refuses to convert a string of over 4,300
# digits to an int (sys.get_int_max_str_digits) with a ValueError.

HUGE = "1" * 4301


def test_a_toml_integer_of_thousands_of_digits_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        read_file(input_file("huge.toml", f"port = {HUGE}\n".encode()), ClientSettings)


def test_a_kmsg_record_with_a_priority_of_thousands_of_digits_is_no_message() -> None:
    assert record_text(f"{HUGE},1,1,-;IN=eth0 OUT=".encode()) is None


def test_a_block_name_is_shown_printable_and_hosts_lines_are_numbered_by_newlines(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text("<\x1b[2Jx>\nport = 1\n</\x1b[2Jx>\n")
    with pytest.raises(ConfigError) as caught:
        read_file(conf, ClientSettings)
    assert "\x1b" not in str(caught.value) and caught.value.line == 1
    hosts = tmp_path / "fleet.txt"
    hosts.write_text("web1  # a\x0cb\u2028c\nweb3 port=x\n")
    with pytest.raises(ConfigError, match=r"fleet\.txt:2: "):
        read_hosts_file(str(hosts), ClientSettings())
