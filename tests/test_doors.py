"""``Door``, ``DoorTable`` and ``Command``: validation, open windows, cooldown, rendering."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioknock.config.loader import build_settings
from aioknock.config.settings import DaemonSettings
from aioknock.daemon.doors import Command, Door, DoorTable, Key
from aioknock.errors import ConfigError, InvalidValue

# -------------------------------------------------------------------------- Door


@pytest.mark.parametrize(
    ("address", "expected", "family"),
    [
        ("198.18.0.1", "198.18.0.1", 4),
        ("2001:2::1", "2001:2::1", 6),
        ("2001:0002:0000:0000:0000:0000:0000:0001", "2001:2::1", 6),
        ("::ffff:198.18.0.1", "198.18.0.1", 4),
        ("2001:2::ABCD", "2001:2::abcd", 6),
    ],
)
def test_grant_normalises_addresses(address: str, expected: str, family: int) -> None:
    grant = Door.make(address, 22, "tcp")
    assert grant.address == expected
    assert grant.family == family
    assert grant.key == (expected, 22, "tcp")


@pytest.mark.parametrize(
    "address",
    [
        "", "host.example", "198.18.0.256", "198.018.0.1", " 198.18.0.1", "198.18.0.1\n",
        "198.18.0.1/32", "fe80::1%eth0", "fe80::1%--help", "fe80::1%a b", "fe80::1%IP",
        "-1", "0x7f000001", 3232235777, None, b"198.18.0.1",
    ],
)  # fmt: skip
def test_grant_rejects_non_addresses(address: Any) -> None:
    with pytest.raises(ValueError):
        Door.make(address, 22, "tcp")


@pytest.mark.parametrize("port", [0, -1, 65536, 1 << 40, True, "22", 22.0, None])
def test_grant_rejects_bad_ports(port: Any) -> None:
    with pytest.raises(ValueError):
        Door.make("198.18.0.1", port, "tcp")


@pytest.mark.parametrize("proto", ["", "TCP", "icmp", "sctp", " tcp", "tcp\n", None, 6])
def test_grant_rejects_bad_protocols(proto: Any) -> None:
    with pytest.raises(ValueError):
        Door.make("198.18.0.1", 22, proto)


def test_grant_ports_and_flags() -> None:
    assert Door.make("198.18.0.1", 1, "udp").key == ("198.18.0.1", 1, "udp")
    assert Door.make("198.18.0.1", 65535, "tcp").port == 65535
    grant = Door.make("198.18.0.1", 22, "tcp", {3: 255, 1: 0})
    assert grant.flags == ((1, 0), (3, 255))
    for bad in ({1: 256}, {1: -1}, {-1: 1}, {1: True}, {"1": 1}, {1: "7"}):
        with pytest.raises(ValueError):
            Door.make("198.18.0.1", 22, "tcp", bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------- DoorTable


def due(keeper: DoorTable, now: float) -> list[Key]:
    return [held.door.key for held in keeper.due(now)]


A = Door.make("198.18.0.1", 22, "tcp")
B = Door.make("198.18.0.9", 22, "tcp")


def test_open_then_due_at_the_deadline_then_forgotten() -> None:
    keeper = DoorTable(duration=30, cooldown=2)
    assert keeper.next_deadline() is None
    assert keeper.request(A, 100.0) == "open"
    assert keeper.get(A.key) is not None
    assert keeper.next_deadline() == 130.0
    assert due(keeper, 129.999) == []
    assert due(keeper, 130.0) == [A.key]
    assert keeper.get(A.key) is None
    assert due(keeper, 131.0) == []
    assert keeper.next_deadline() is None
    assert keeper.request(A, 131.0) == "open"


def test_repeat_within_window_extends() -> None:
    keeper = DoorTable(duration=30, cooldown=2)
    assert keeper.request(A, 100.0) == "open"
    assert keeper.request(A, 110.0) == "extend"
    assert keeper.next_deadline() == 140.0
    assert due(keeper, 130.0) == []
    assert keeper.request(A, 139.0) == "extend"
    assert due(keeper, 168.9) == []
    assert due(keeper, 169.0) == [A.key]


def test_cooldown_refuses_and_does_not_extend() -> None:
    keeper = DoorTable(duration=30, cooldown=5)
    assert keeper.request(A, 100.0) == "open"
    assert keeper.request(A, 104.9) == "cooldown"
    assert keeper.next_deadline() == 130.0  # unchanged by the refused knock
    assert keeper.request(A, 105.0) == "extend"
    assert keeper.request(B, 105.0) == "open"  # another address is not held back
    assert keeper.request(Door.make("198.18.0.1", 23, "tcp"), 105.0) == "open"


def test_cooldown_outlives_a_short_door() -> None:
    """cooldown > duration: a door that already closed still cannot be re-triggered."""
    keeper = DoorTable(duration=1, cooldown=10)
    assert keeper.request(A, 100.0) == "open"
    assert due(keeper, 101.0) == [A.key]
    assert keeper.request(A, 102.0) == "cooldown"
    assert keeper.request(A, 109.9) == "cooldown"
    assert keeper.request(A, 110.0) == "open"


def test_past_deadline_but_not_yet_closed_is_an_extension() -> None:
    """Until ``due`` handed it to the closer, the rule is still there: no second open."""
    keeper = DoorTable(duration=30, cooldown=2)
    assert keeper.request(A, 100.0) == "open"
    assert keeper.request(A, 130.5) == "extend"
    assert due(keeper, 131.0) == []
    assert due(keeper, 160.5) == [A.key]


def test_zero_cooldown() -> None:
    keeper = DoorTable(duration=30, cooldown=0)
    assert keeper.request(A, 100.0) == "open"
    assert keeper.request(A, 100.0) == "extend"


def test_several_doors_deadlines() -> None:
    keeper = DoorTable(duration=10, cooldown=1)
    keeper.request(A, 100.0)
    keeper.request(B, 103.0)
    assert keeper.next_deadline() == 110.0
    assert due(keeper, 110.0) == [A.key]
    assert keeper.next_deadline() == 113.0
    assert due(keeper, 200.0) == [B.key]


def test_memory_bounded_after_many_doors() -> None:
    keeper = DoorTable(duration=1, cooldown=5)
    for i in range(5000):
        grant = Door.make(str(ipaddress.ip_address("198.18.0.0") + i), 22, "tcp")
        assert keeper.request(grant, float(i)) == "open"
        keeper.due(float(i))
    assert len(keeper._open) <= 2
    assert len(keeper._last) <= 6
    keeper.forget_cooldowns(1e9)
    assert keeper._last == {}


def test_memory_bounded_without_due_calls() -> None:
    keeper = DoorTable(duration=1e6, cooldown=1)
    for i in range(3000):
        grant = Door.make(str(ipaddress.ip_address("198.18.0.0") + i), 22, "tcp")
        keeper.request(grant, float(i))
    assert len(keeper._last) <= 1024 + 2 * len(keeper._open) + 1


# ----------------------------------------------------------------------- Command


def test_parse_splits_like_a_shell_but_runs_none() -> None:
    cmd = Command.parse("iptables -I INPUT -s %IP% -m comment --comment 'aioknock door'")
    assert cmd.argv == (
        "iptables", "-I", "INPUT", "-s", "%IP%", "-m", "comment", "--comment", "aioknock door",
    )  # fmt: skip
    assert Command.parse("a;b|c $(d) `e` > f").argv == ("a;b|c", "$(d)", "`e`", ">", "f")


@pytest.mark.parametrize(
    ("text", "needle"),
    [("", "empty"), ("   ", "empty"), ("nft 'unclosed", "cannot split"), ("a\0b", "NUL")],
)
def test_parse_errors(text: str, needle: str) -> None:
    with pytest.raises(InvalidValue) as err:
        Command.parse(text)
    assert needle in str(err.value)
    if text.strip():  # an empty close command in the settings is no close command
        with pytest.raises(ConfigError) as named:
            overrides = {"backend": "command", "open": "true", "close": text}
            build_settings(DaemonSettings, path=None, overrides=overrides, sending=False)
        assert named.value.key == "close"
        assert needle in str(named.value)


def test_render_all_placeholders() -> None:
    cmd = Command.parse(
        "fw --src=%IP% --port %PORT%/%PROTO% -t %DURATION%s %FLAG1%:%FLAG3% %FLAG2% %IP%%PORT%",
    )
    grant = Door.make("2001:2::1", 22, "udp", {1: 7, 3: 255})
    assert cmd.render(grant, 30.0) == [
        "fw", "--src=2001:2::1", "--port", "22/udp", "-t", "30s", "7:255", "%FLAG2%",
        "2001:2::122",
    ]  # fmt: skip
    assert cmd.render(grant, 2.2)[5] == "3s"  # rounded up: never shorter than configured
    assert cmd.render(grant, 0)[5] == "0s"


def test_render_is_a_single_pass() -> None:
    """A substituted value is never searched for placeholders again."""
    cmd = Command(("%IP%%PORT%%", "%%IP%%", "%PORT", "%ip%", "%FLAG01%"))
    grant = Door.make("198.18.0.1", 22, "tcp", {1: 4})
    assert cmd.render(grant, 5) == ["198.18.0.122%", "%198.18.0.1%", "%PORT", "%ip%", "4"]


_VALUE = {
    "IP": r"[0-9a-f.:]+",
    "PORT": r"[0-9]{1,5}",
    "PROTO": r"(?:tcp|udp)",
    "DURATION": r"[0-9]+",
}
_PLACEHOLDER = re.compile(r"%(IP|PORT|PROTO|DURATION|FLAG[0-9]{1,9})%")

grants = st.builds(
    Door.make,
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str),
    st.integers(1, 65535),
    st.sampled_from(["tcp", "udp"]),
    st.dictionaries(st.integers(0, 20), st.integers(0, 255), max_size=4),
)
template_args = st.lists(
    st.one_of(
        st.text(max_size=8),
        st.sampled_from(["%IP%", "%PORT%", "%PROTO%", "%DURATION%", "%FLAG1%", "%FLAG17%", "%"]),
    ),
    max_size=6,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(st.lists(template_args, min_size=1, max_size=8), grants, st.floats(0, 1e7))
def test_render_never_adds_splits_or_interprets(
    argv: list[str], grant: Door, duration: float
) -> None:
    rendered = Command(tuple(argv)).render(grant, duration)
    assert len(rendered) == len(argv)
    flags = dict(grant.flags)
    for template, out in zip(argv, rendered, strict=True):
        # Only placeholder text changed: the literal parts match exactly, each
        # placeholder became a validated value (or, an absent flag, itself).
        parts: list[str] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(template):
            parts.append(re.escape(template[pos : m.start()]))
            name = m.group(1)
            if name.startswith("FLAG"):
                flag = flags.get(int(name[4:]))
                parts.append(re.escape(m.group(0)) if flag is None else str(flag))
            else:
                parts.append(_VALUE[name])
            pos = m.end()
        parts.append(re.escape(template[pos:]))
        assert re.fullmatch("".join(parts), out, re.DOTALL), (template, out)
        if not _PLACEHOLDER.search(template):
            assert out == template
        if "%IP%" in template:
            assert grant.address in out


@settings(max_examples=200, deadline=None)
@given(grants)
def test_render_values_are_exactly_the_grant(grant: Door) -> None:
    cmd = Command(("%IP%", "%PORT%", "%PROTO%", "%DURATION%"))
    assert cmd.render(grant, 30) == [grant.address, str(grant.port), grant.proto, "30"]
    ipaddress.ip_address(grant.address)  # always a plain address: no scope id, no spaces
    assert not grant.address.startswith("-")
