"""fwknop SPA: the codec against its references (the real ``fwknop`` client, OpenSSL's
``enc`` and ``dgst``), its properties, and the recognizer's verdicts without I/O."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers.netns import in_ci
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aioknock.codec import spa
from aioknock.daemon.fwknopd import ANY, SpaPackets, Stanza
from aioknock.daemon.packet import Packet
from aioknock.daemon.recognizer import Grant, Refusal
from aioknock.daemon.replay import DIGEST_SIZE, ReplayMemory
from aioknock.errors import KnockError

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_796_000_000.0
SRC = "198.18.0.1"
KEYS = spa.SpaKeys(b"k" * 32, b"h" * 64)

users = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters=
                              '"/\\[]:;|=,+*?<>'), min_size=1, max_size=64)  # fmt: skip
addresses = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str), st.just("0.0.0.0")
)
pairs = st.tuples(st.sampled_from(["tcp", "udp"]), st.integers(1, 65535))
digests = st.sampled_from(sorted(spa.HASHES))


@st.composite
def messages(draw: st.DrawFn) -> spa.SpaMessage:
    timeout = draw(st.one_of(st.just(0), st.integers(1, 65535)))
    return spa.SpaMessage(
        allow=draw(addresses), access=tuple(draw(st.lists(pairs, min_size=1, max_size=8))),
        timestamp=draw(st.integers(0, 2**32 - 1)), username=draw(users),
        client_timeout=timeout, rand=spa.random_value(),
        message_type=spa.CLIENT_TIMEOUT_ACCESS_MSG if timeout else spa.ACCESS_MSG,
        digest_type=draw(digests),
    )  # fmt: skip


keys = st.builds(spa.SpaKeys, st.binary(min_size=1, max_size=32),
                 st.binary(min_size=1, max_size=128), digests)  # fmt: skip


# ------------------------------------------------------------------------ the codec


@PROPERTY
@given(messages(), keys, st.binary(min_size=8, max_size=8))
def test_round_trip(msg: spa.SpaMessage, k: spa.SpaKeys, salt: bytes) -> None:
    packet = spa.build(msg, k, salt)
    assert spa.decode_message(spa.unseal(packet, k)) == msg


@PROPERTY
@given(messages(), st.data())
def test_any_change_to_a_packet_is_refused(msg: spa.SpaMessage, data: st.DataObject) -> None:
    packet = bytearray(spa.build(msg, KEYS))
    i = data.draw(st.integers(0, len(packet) - 1))
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    packet[i] = data.draw(st.sampled_from(alphabet).filter(lambda c: c != packet[i]))
    with pytest.raises(KnockError):
        spa.decode_message(spa.unseal(bytes(packet), KEYS))


@PROPERTY
@given(st.binary(max_size=1600))
def test_arbitrary_bytes_raise_only_knock_errors(data: bytes) -> None:
    with pytest.raises(KnockError):
        spa.unseal(data, KEYS)
    with contextlib.suppress(KnockError):
        spa.decode_message(data)


@PROPERTY
@given(st.text(alphabet="0123456789:abcAB+/=,./tcpud", max_size=300))
def test_arbitrary_plaintexts_raise_only_knock_errors(text: str) -> None:
    try:
        msg = spa.decode_message(text.encode())
    except KnockError:
        return
    assert msg.access  # accepted only with a valid digest: practically never


def test_a_wrong_key_fails_at_the_hmac_before_decryption() -> None:
    packet = spa.build(spa.SpaMessage("198.18.0.2", (("tcp", 22),), int(NOW)), KEYS)
    with pytest.raises(KnockError, match="HMAC"):
        spa.unseal(packet, spa.SpaKeys(b"k" * 32, b"x" * 64))
    with pytest.raises(KnockError, match="decryption"):  # right HMAC key, wrong key
        spa.unseal(packet, spa.SpaKeys(b"z" * 32, b"h" * 64))


def test_shape_checks_as_fwknopd() -> None:
    packet = spa.build(spa.SpaMessage("198.18.0.2", (("tcp", 22),), int(NOW)), KEYS)
    for bad, why in [
        (packet[:139], "bytes"),
        (packet + b"A" * 1500, "bytes"),
        (spa.PREFIX.encode() + packet, "prefix"),
        (packet[:-1] + b"!", "base64"),
    ]:
        with pytest.raises(KnockError, match=why):
            spa.unseal(bad, KEYS)


@pytest.mark.parametrize("spec", ["tcp/²", "tcp/٢٢", "tcp/0", "tcp/65536", "tcp/", "icmp/1", "/22"])
def test_bad_proto_port_is_a_knock_error(spec: str) -> None:
    with pytest.raises(KnockError):
        spa.parse_proto_port(spec)


@pytest.mark.parametrize("kind", [0, 2, 4, 5, 6])
def test_unimplemented_message_types_are_refused(kind: int) -> None:
    body = f"1234567890123456:cm9vdA:{int(NOW)}:3.0.0:{kind}:{spa.b64(b'1.2.3.4,tcp/22')}"
    digest = spa.b64(spa.HASHES["sha256"].new(body.encode()).digest())
    with pytest.raises(KnockError, match="not implemented"):
        spa.decode_message(f"{body}:{digest}".encode())


@pytest.mark.parametrize("passphrase", [b"secret", b"x", b"a 32-byte passphrase, exactly..."])
def test_bytes_to_key_is_openssls(passphrase: bytes) -> None:
    _need("openssl")
    salt = bytes(range(1, 9))
    assert spa.bytes_to_key(passphrase, salt) == _openssl_p(passphrase, salt)


def _openssl_p(passphrase: bytes, salt: bytes) -> tuple[bytes, bytes]:
    out = subprocess.run(
        ["openssl", "enc", "-aes-256-cbc", "-md", "md5", "-pass", f"pass:{passphrase.decode()}",
         "-S", salt.hex(), "-P"], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    values: dict[str, str] = {}
    for line in out.splitlines():
        name, _, value = line.partition("=")
        values[name.strip()] = value.strip()
    return bytes.fromhex(values["key"]), bytes.fromhex(values["iv"])


# ------------------------------------------------- against independent references


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        if in_ci():
            pytest.fail(f"{program} is not installed (scripts/test installs it)")
        pytest.skip(f"{program} is not installed")
    return path


printable_keys = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                         min_size=1, max_size=32)  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(messages(), printable_keys, st.binary(min_size=1, max_size=128), digests)
def test_openssl_decrypts_and_authenticates_our_packets(
    msg: spa.SpaMessage, passphrase: str, hmac_key: bytes, digest: str
) -> None:
    """OpenSSL's ``enc -d -aes-256-cbc -md md5`` decrypts what we seal, and its HMAC
    over the base64 text is the tag on the wire."""
    _need("openssl")
    k = spa.SpaKeys(passphrase.encode(), hmac_key, digest)
    packet = spa.build(msg, k).decode()
    size = spa.b64_length(digest)
    text = spa.PREFIX + packet[:-size]
    with tempfile.TemporaryDirectory() as tmp:
        pass_file = Path(tmp) / "pass"
        pass_file.write_text(passphrase + "\n")
        plain = subprocess.run(
            ["openssl", "enc", "-d", "-aes-256-cbc", "-md", "md5", "-a", "-A",
             "-pass", f"file:{pass_file}"],
            input=(text + "=" * (-len(text) % 4)).encode(), capture_output=True, check=True,
        ).stdout  # fmt: skip
    assert spa.decode_message(plain) == msg
    name = {"sha3_256": "sha3-256", "sha3_512": "sha3-512"}.get(digest, digest)
    mac = subprocess.run(
        ["openssl", "dgst", f"-{name}", "-mac", "HMAC", "-macopt", f"hexkey:{hmac_key.hex()}",
         "-binary"], input=text.encode(), capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert packet.endswith(spa.b64(mac))


def _fwknop_packet(tmp: Path, *args: str) -> str:
    """What the real fwknop client would send (``--test``: nothing leaves the host)."""
    _need("fwknop")
    rc = tmp / "fwknoprc"
    rc.write_text("")
    rc.chmod(0o600)
    out = subprocess.run(
        ["fwknop", "--rc-file", str(rc), "--test", "-v", "-D", "127.0.0.1", *args],
        capture_output=True, text=True, timeout=10, env={"HOME": str(tmp), "PATH": "/usr/bin"},
    )  # fmt: skip
    assert "Final SPA Data:" in out.stdout, out.stdout + out.stderr
    return out.stdout.split("Final SPA Data:")[1].split()[0]


@pytest.mark.parametrize("digest", ["sha256", "sha512", "sha1", "md5", "sha384", "sha3_256",
                                    "sha3_512"])  # fmt: skip
def test_we_read_the_real_fwknop_clients_packets(tmp_path: Path, digest: str) -> None:
    key, hmac_key = bytes(range(32)), bytes(range(64, 128))
    packet = _fwknop_packet(
        tmp_path, "-A", "tcp/22,udp/53", "-a", "198.18.0.2", "--fw-timeout", "45",
        "--key-base64-rijndael", base64.b64encode(key).decode(),
        "--key-base64-hmac", base64.b64encode(hmac_key).decode(),
        "--hmac-digest-type", digest, "--digest-type", digest,
    )  # fmt: skip
    msg = spa.decode_message(spa.unseal(packet.encode(), spa.SpaKeys(key, hmac_key, digest)))
    assert (msg.allow, msg.access) == ("198.18.0.2", (("tcp", 22), ("udp", 53)))
    assert (msg.client_timeout, msg.message_type, msg.digest_type) == (45, 3, digest)


# ------------------------------------------------------------------ the recognizer


def stanza(**changes: object) -> Stanza:
    fields: dict[str, object] = {"sources": ANY, "keys": KEYS, "where": "access.conf:1"}
    fields.update(changes)
    return Stanza(**fields)  # type: ignore[arg-type]


def datagram(allow: str = SRC, access: tuple[tuple[str, int], ...] = (("tcp", 22),), *,
             at: float = NOW, k: spa.SpaKeys = KEYS, timeout: int = 0) -> bytes:  # fmt: skip
    return spa.build(spa.SpaMessage(allow, access, int(at), client_timeout=timeout), k)


def judge(rec: SpaPackets, data: bytes, *, src: str = SRC, now: float = NOW) -> object:
    (verdict,) = rec.receive(Packet(now, src, 62201, "udp", 40000, "198.18.0.2", data))
    return verdict


def recognizer(*stanzas: Stanza, replays: ReplayMemory | None = None) -> SpaPackets:
    return SpaPackets(stanzas or (stanza(),), port=62201, max_age=120, replays=replays)


def test_a_good_packet_is_granted_with_the_stanzas_duration() -> None:
    verdict = judge(
        recognizer(stanza(fw_access_timeout=7)), datagram(access=(("tcp", 22), ("udp", 53)))
    )
    assert isinstance(verdict, Grant)
    assert verdict.address == SRC and verdict.ports == ((22, "tcp"), (53, "udp"))
    assert verdict.duration == 7 and len(verdict.digest) == DIGEST_SIZE


def test_client_timeout_is_capped_by_max_fw_timeout() -> None:
    rec = recognizer(stanza(max_fw_timeout=60))
    assert getattr(judge(rec, datagram(timeout=45)), "duration", None) == 45
    assert getattr(judge(rec, datagram(timeout=500)), "duration", None) == 60


def test_source_allow_address_opens_for_the_packets_source() -> None:
    verdict = judge(recognizer(), datagram(allow="0.0.0.0"))
    assert isinstance(verdict, Grant) and verdict.address == SRC


def test_ipv6_allow_address() -> None:
    verdict = judge(recognizer(), datagram(allow="fd00::1"), src="fd00::1")
    assert isinstance(verdict, Grant) and verdict.address == "fd00::1"


@pytest.mark.parametrize(
    ("changes", "packet", "reason"),
    [
        ({}, {"at": NOW - 300}, "packet age 300 s"),
        ({}, {"at": NOW + 121}, "packet age 121 s"),
        ({"require_source_address": True}, {"allow": "0.0.0.0"}, "no allow address"),
        ({"require_source_address": True}, {"allow": "198.18.0.99"}, "is not the source"),
        ({"open_ports": (("tcp", 22),)}, {"access": (("tcp", 23),)}, "not in OPEN_PORTS"),
        ({"open_ports": (("tcp", 22),)}, {"access": (("tcp", 22), ("udp", 22))},
         "udp/22 is not in OPEN_PORTS"),
        ({"restrict_ports": (("tcp", 22),)}, {}, "in RESTRICT_PORTS"),
        ({"require_username": "alice"}, {}, "REQUIRE_USERNAME"),
        ({"sources": (ipaddress.ip_network("198.19.0.0/16"),)}, {}, "SOURCE matches"),
        ({"access_expire": NOW - 1}, {}, "SOURCE matches"),
        ({}, {"k": spa.SpaKeys(b"k" * 32, b"x" * 64)}, "HMAC does not verify"),
    ],
)  # fmt: skip
def test_refusals(changes: dict[str, object], packet: dict[str, object], reason: str) -> None:
    verdict = judge(recognizer(stanza(**changes)), datagram(**packet))  # type: ignore[arg-type]
    assert isinstance(verdict, Refusal), verdict
    assert reason in verdict.reason


def test_a_replayed_packet_is_refused_also_from_another_source() -> None:
    rec, data = recognizer(), datagram()
    assert isinstance(judge(rec, data), Grant)
    for src in (SRC, "198.18.0.7"):
        verdict = judge(rec, data, src=src, now=NOW + 1)
        assert isinstance(verdict, Refusal) and "replayed" in verdict.reason


def test_a_packet_refused_after_decryption_is_used_up_as_in_fwknopd() -> None:
    rec = recognizer(stanza(open_ports=(("tcp", 80),)))
    data = datagram()
    assert "OPEN_PORTS" in getattr(judge(rec, data), "reason", "")
    assert "replayed" in getattr(judge(rec, data), "reason", "")


def test_the_first_stanza_whose_hmac_verifies_decides() -> None:
    other = spa.SpaKeys(b"o" * 32, b"p" * 64)
    rec = recognizer(stanza(keys=other, where="a:1"), stanza(fw_access_timeout=9, where="a:5"))
    verdict = judge(rec, datagram())
    assert isinstance(verdict, Grant) and verdict.duration == 9 and "a:5" in verdict.reason


def test_what_is_not_spa_shaped_gets_no_verdict() -> None:
    rec = recognizer()
    for junk in (b"\x00" * 200, b"A" * 100, b"A" * 1501, spa.PREFIX.encode() + b"A" * 200):
        assert rec.receive(Packet(NOW, SRC, 62201, "udp", 1, "", junk)) == []
    assert isinstance(judge(rec, b"A" * 200), Refusal)  # shaped like SPA: HMAC fails


def test_replay_memory_forgets_packets_once_too_old_and_fails_closed_when_full() -> None:
    memory = ReplayMemory(limit=3)
    rec = recognizer(replays=memory)
    for i in range(3):
        assert isinstance(judge(rec, datagram(at=NOW + i), now=NOW + i), Grant)
    full = judge(rec, datagram(at=NOW + 3), now=NOW + 3)
    assert isinstance(full, Refusal) and "replay memory is full" in full.reason
    later = NOW + 121.5  # the first two are now too old to pass the age check anyway
    assert isinstance(judge(rec, datagram(at=later), now=later), Grant)
    assert len(memory) == 2


def test_log_lines_without_a_datagram_are_not_read() -> None:
    assert recognizer().receive(Packet(NOW, SRC, 62201, "udp")) == []
