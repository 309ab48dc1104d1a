"""``protocol = sealed`` in the settings: its own defaults, its keys, its errors, and a
knock the client plans that the daemon's recognizer (made from the daemon's settings)
accepts, in-process (issue 10). The wire format and the recognizer alone are in
test_sealed.py and test_sealed_recognizer.py; the network in test_netns_sealed.py."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from aioknock.asyncio.client import plan_sealed
from aioknock.asyncio.daemon import make_recognizers
from aioknock.cli import main as cli
from aioknock.codec import sealed
from aioknock.config.settings import ClientSettings, DaemonSettings
from aioknock.daemon.packet import Packet
from aioknock.daemon.recognizer import Grant, Refusal
from aioknock.daemon.replay import ReplayMemory
from aioknock.errors import ConfigError

KEY = base64.b64encode(bytes(range(32))).decode()
MASTER = base64.b64encode(bytes(range(100, 132))).decode()

pytestmark = pytest.mark.usefixtures("isolated")


def client(**values: object) -> ClientSettings:
    return ClientSettings.of(**{"protocol": "sealed", "key": KEY, **values})


def daemon(**values: object) -> DaemonSettings:
    base: dict[str, object] = {"protocol": "sealed", "key": KEY, "server_id": "gate.example",
                               "backend": "command", "open": "true"}  # fmt: skip
    return DaemonSettings.of(**{**base, **values})


def receive(settings: DaemonSettings, ports: list[int], src: str, now: float) -> list[object]:
    (recognizer,) = make_recognizers(settings, ReplayMemory())
    verdicts: list[object] = []
    for i, port in enumerate(ports):
        verdicts += recognizer.receive(Packet(now + i * 0.01, src, port, sport=40000 + i))
    return verdicts


def test_a_sealed_knock_has_its_own_span_and_pace() -> None:
    s = client()
    assert (str(s.portspan), s.timeout) == ("32768-65535", 0.02)
    given = client(portspan="1024-33791", timeout=0.1)
    assert (str(given.portspan), given.timeout) == ("1024-33791", 0.1)
    assert str(daemon().portspan) == "32768-65535"
    # The prototype's knock keeps its own defaults.
    assert (str(ClientSettings().portspan), ClientSettings().timeout) == ("745-1000", 0.2)


@pytest.mark.parametrize(
    ("values", "key", "message"),
    [
        ({"key": ""}, "key_file", "protocol = sealed needs a key"),
        ({"tag_bits": 70}, "tag_bits", "multiple of 8"),
        ({"tag_bits": 136}, "tag_bits", "64-128"),
        ({"portspan": "745-1000"}, "portspan", "2^15|32768 consecutive"),
        ({"master": True, "key": "a passphrase"}, "key", "not a passphrase"),
        ({"server_id": "a b"}, "server_id", "printable ASCII without blanks"),
    ],
)
def test_client_errors_name_the_key(values: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        client(**values)
    assert info.value.key == key


@pytest.mark.parametrize(
    ("values", "key", "message"),
    [
        ({"sequence": "7000,8000"}, "sequence", "not a knockd sequence"),
        ({"access": "tcp/22,udp/53"}, "access", "one protocol"),
    ],
)
def test_what_a_sealed_knock_cannot_send(values: dict[str, object], key: str,
                                         message: str) -> None:  # fmt: skip
    with pytest.raises(ConfigError, match=message) as info:
        client(**values).check_sendable()
    assert info.value.key == key


def test_daemon_errors() -> None:
    with pytest.raises(ConfigError, match="needs server_id") as info:
        daemon(server_id="")
    assert info.value.key == "server_id"
    with pytest.raises(ConfigError, match="reads SPA through access_file") as info:
        daemon(protocol="spa")
    assert info.value.key == "protocol"
    with pytest.raises(ConfigError, match="needs a key"):
        daemon(key="")


def test_the_key_is_a_keygen_line_or_a_scrypt_passphrase() -> None:
    assert client().sealed_for("h").key == bytes(range(32))
    phrase = client(key="correct horse battery").sealed_for("h")
    assert phrase.key == sealed.passphrase_key("correct horse battery")


def test_server_id_is_the_host_unless_set_and_master_derives_its_key() -> None:
    assert client().sealed_for("DB1.Example.").server_id == "db1.example"
    assert client(server_id="gate.example").sealed_for("10.0.0.1").server_id == "gate.example"
    fleet = client(key=MASTER, master=True)
    derived = fleet.sealed_for("db1.example")
    assert derived.key == sealed.host_key(base64.b64decode(MASTER), "db1.example")
    assert derived.key != fleet.sealed_for("db2.example").key


def test_the_planned_knock_opens_the_daemon_made_from_its_settings() -> None:
    now = time.time()
    s = client(port=2222)
    wire = plan_sealed(s, "gate.example", now=now, source="198.18.0.2")
    ports = s.sealed_for("gate.example").ports(wire)
    assert len(ports) == 16 and all(32768 <= p <= 65535 for p in ports)
    (grant,) = receive(daemon(), ports, "198.18.0.2", now)
    assert isinstance(grant, Grant)
    assert (grant.address, grant.ports, grant.via) == ("198.18.0.2", ((2222, "tcp"),), "sealed")
    # Bound to its source: from another address, no knock.
    assert not any(isinstance(v, Grant) for v in receive(daemon(), ports, "198.18.0.3", now))
    # Without a source given, the route's: to 127.0.0.1, from 127.0.0.1.
    local = plan_sealed(s, "127.0.0.1", now=now)
    ports = s.sealed_for("127.0.0.1").ports(local)
    assert isinstance(receive(daemon(server_id="127.0.0.1"), ports, "127.0.0.1", now)[0], Grant)


def test_an_explicit_client_is_carried_ipv4_or_ipv6() -> None:
    now = time.time()
    for address in ("198.18.0.2", "fd00::2"):
        s = client(client=address)
        codec = s.sealed_for("gate.example")
        msg = codec.decode(codec.ports(plan_sealed(s, "gate.example", now=now)))
        assert msg.address == address
    # Carried but not the source: refused unless allow_nat.
    s = client(client="fd00::2")
    ports = s.sealed_for("gate.example").ports(plan_sealed(s, "gate.example", now=now))
    (refusal,) = receive(daemon(), ports, "fd00::3", now)
    assert isinstance(refusal, Refusal) and "allow_nat = no" in refusal.reason
    (grant,) = receive(daemon(allow_nat=True), ports, "fd00::3", now)
    assert isinstance(grant, Grant) and grant.address == "fd00::2"


def test_a_knock_for_another_server_id_or_key_opens_nothing() -> None:
    now = time.time()
    s = client(key=MASTER, master=True)
    wire = plan_sealed(s, "db1.example", now=now, source="198.18.0.2")
    ports = s.sealed_for("db1.example").ports(wire)
    own_key = base64.b64encode(sealed.host_key(base64.b64decode(MASTER), "db1.example"))
    db1 = daemon(key=own_key.decode(), server_id="db1.example")
    assert isinstance(receive(db1, ports, "198.18.0.2", now)[0], Grant)
    db2_key = base64.b64encode(sealed.host_key(base64.b64decode(MASTER), "db2.example"))
    db2 = daemon(key=db2_key.decode(), server_id="db2.example")
    assert not any(isinstance(v, Grant) for v in receive(db2, ports, "198.18.0.2", now))


def test_hosts_file_lines_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "sealed.key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    hosts = tmp_path / "fleet.txt"
    hosts.write_text("127.0.0.2 protocol=sealed\n127.0.0.3 protocol=sealed tag_bits=128\n"
                     "127.0.0.4\n")  # fmt: skip
    code = cli.main(["run", "-test", "--json", "-key_file", str(key), "--hosts", str(hosts)])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [(o["protocol"], len(o["ports"])) for o in out] == [
        ("sealed", 16), ("sealed", 22), ("knockclient", 9),
    ]  # fmt: skip
