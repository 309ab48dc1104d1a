"""Knock format: the manual's example knocks, time fields, checksums, pack/unpack."""

from __future__ import annotations

import calendar
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aioknock
from aioknock import ClientSettings, ConfigError, InvalidValue, KnockError
from aioknock.codec.fields import (
    TIME_FIELDS,
    KnockFormat,
    KnockInputs,
    flag_number,
    time_values,
)

Loader = Callable[..., aioknock.Settings]


@pytest.fixture
def load(tmp_path: Path, clean_env: None) -> Loader:
    """load_config on an empty file, with no AIOKNOCK_* variables in the way."""
    conf = tmp_path / "knockclient.conf"
    conf.write_text("")

    def load(**overrides: Any) -> aioknock.Settings:
        return aioknock.load_config(conf, **overrides)

    return load


# --- the manual's example knocks (client = 10.1.1.1, port 22, flag0 15, flag1 100) --------

MANUAL = {"client": "10.1.1.1", "port": 22, "flag0": 15, "flag1": 100, "encrypt": False}


@pytest.mark.parametrize(
    ("knock", "portbytes", "values"),
    [
        ("CLIENT,PORT", 1, [10, 1, 1, 1, 22]),
        ("CLIENT,PORT", 2, [10, 1, 1, 1, 0, 22]),
        ("CLIENT,PORT,FLAG0", 1, [10, 1, 1, 1, 22, 15]),
        ("CLIENT,PORT,FLAG0", 2, [10, 1, 1, 1, 0, 22, 15]),
        ("CLIENT,PORT,FLAG0,CHECKSUM", 1, [10, 1, 1, 1, 22, 15, 50]),
        ("CLIENT,PORT,FLAG0,CHECKSUM", 2, [10, 1, 1, 1, 0, 22, 15, 50]),
        ("CLIENT,FLAG0,PORT,FLAG1", 1, [10, 1, 1, 1, 15, 22, 100]),
        ("CLIENT,FLAG0,PORT,FLAG1", 2, [10, 1, 1, 1, 15, 0, 22, 100]),
        ("CHECKSUM,FLAG1,FLAG0,CLIENT", 1, [128, 100, 15, 10, 1, 1, 1]),
        ("CHECKSUM,FLAG1,FLAG0,CLIENT", 2, [128, 100, 15, 10, 1, 1, 1]),
    ],
)
def test_manual_knock_lines(load: Loader, knock: str, portbytes: int, values: list[int]) -> None:
    settings = load(knock=knock, portbytes=portbytes, **MANUAL)
    plan = aioknock.build_knock(settings, now=0)
    assert plan.values == values
    assert plan.payload == bytes(values)  # encrypt = no: the payload is the values
    assert plan.ports == settings.portspan.encode(bytes(values))
    fields = aioknock.decode_knock(settings, plan.ports)
    assert fields["client"] == "10.1.1.1"
    if "PORT" in knock:
        assert fields["port"] == 22


def test_manual_knock_lines_from_a_config_file(tmp_path: Path) -> None:
    # The manual's lines as written there, comments included.
    conf = tmp_path / "knockclient.conf"
    conf.write_text(
        "client = 10.1.1.1\nport   = 22\nportbytes = 1\nflag0  = 15\nflag1  = 100\n"
        "knock  = CLIENT,FLAG0,PORT,FLAG1  # 10 1 1 1 15 22 100\n"
    )
    plan = aioknock.build_knock(aioknock.load_config(conf))
    assert plan.values == [10, 1, 1, 1, 15, 22, 100]


def test_manual_256_example_checksum_is_mod_256() -> None:
    # The manual's "142 103 205 1 22 15 233" shows a checksum taken mod 255: the
    # prototype's bug, fixed in v0.24 ("mod 255 bug fixed"). We compute the sum of
    # the non-checksum bytes mod 256, which is 232 for these values.
    values = [142, 103, 205, 1, 22, 15]
    assert sum(values) % 255 == 233  # what the manual prints (the old bug)
    assert sum(values) % 256 == 232  # what we send
    fmt = KnockFormat.parse("CLIENT,PORT,FLAG0,CHECKSUM", portbytes=1)
    packed = fmt.pack(KnockInputs("142.103.205.1", 22, {0: 15}), now=0)
    assert list(packed) == [*values, 232]
    with pytest.raises(KnockError, match="checksum 233 does not match 232"):
        fmt.unpack(bytes([*values, 233]))


def test_port_beyond_one_byte(load: Loader) -> None:
    settings = load(knock="PORT,CHECKSUM", **{**MANUAL, "port": 8022})
    plan = aioknock.build_knock(settings, now=0)
    assert plan.values == [0x1F, 0x56, (0x1F + 0x56) % 256]
    assert aioknock.decode_knock(settings, plan.ports)["port"] == 8022
    with pytest.raises(ConfigError, match="portbytes"):
        load(knock="PORT", portbytes=1, **{**MANUAL, "port": 8022})


def test_flag_above_255_is_taken_mod_256(load: Loader, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        settings = load(knock="FLAG0", **{**MANUAL, "flag0": 300})
    assert "300" in caplog.text and "44" in caplog.text
    assert aioknock.build_knock(settings, now=0).values == [44]


# --- time fields -------------------------------------------------------------------------


def test_time_fields_utc() -> None:
    now = calendar.timegm((2004, 7, 5, 13, 45, 30)) + 0.75
    assert time_values(now) == {
        "THISYEAR": 2004 % 256,  # 212
        "THISDAY": (31 + 29 + 31 + 30 + 31 + 30 + 5) % 256,  # day of the year, 2004 is leap
        "THISHOUR": (24 * 5 + 13) % 256,  # 24 * day of month + hour
        "THISMINUTE": (60 * 13 + 45) % 256,  # minute of the day
        "THISSECOND": int(now) % 256,  # epoch seconds
    }
    fmt = KnockFormat.parse(",".join(TIME_FIELDS))
    assert fmt.unpack(fmt.pack(KnockInputs(), now)).shown == {
        k.lower(): v for k, v in time_values(now).items()
    }


@pytest.fixture
def tz_plus5(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "XYZ+5")  # POSIX rule: five hours west of UTC, no tzdata needed
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("tz_plus5")
def test_time_fields_localtime() -> None:
    now = calendar.timegm((2004, 1, 1, 2, 0, 0))  # 1 Jan 02:00 UTC = 31 Dec 21:00 local
    utc, local = time_values(now), time_values(now, localtime=True)
    assert (utc["THISYEAR"], utc["THISDAY"], utc["THISHOUR"]) == (212, 1, 26)
    assert local["THISYEAR"] == 2003 % 256
    assert local["THISDAY"] == 365 % 256
    assert local["THISHOUR"] == (24 * 31 + 21) % 256
    assert local["THISMINUTE"] == (60 * 21) % 256 and local["THISSECOND"] == utc["THISSECOND"]


@pytest.mark.parametrize("now", [float("inf"), float("nan"), 1e300, -1e300])
def test_unusable_time_is_a_knock_error(now: float) -> None:
    with pytest.raises(KnockError, match="time"):
        KnockFormat.parse("THISMINUTE").pack(KnockInputs(), now)


# --- format parsing and field errors -----------------------------------------------------


def test_parse_names() -> None:
    fmt = KnockFormat.parse(" ip , port,flag01, FLAG12 ,rand,checksum ")
    assert fmt.fields == ("CLIENT", "PORT", "FLAG1", "FLAG12", "RAND", "CHECKSUM")
    assert fmt.flag_numbers() == [1, 12]
    assert fmt.length == 4 + 2 + 1 + 1 + 1 + 1
    assert KnockFormat.parse("PORT", portbytes=1).length == 1


@pytest.mark.parametrize(
    ("text", "needle"),
    [("CLIENT,,PORT", "empty field"), ("", "empty field"), ("CLIENT,HOST", "unknown field 'HOST'"),
     ("FLAG", "unknown field"), ("FLAGx", "unknown field"), ("FLAG-1", "unknown field"),
     ("FLAG\u0661", "unknown field")],
)  # fmt: skip
def test_parse_errors(text: str, needle: str) -> None:
    with pytest.raises(InvalidValue, match=needle):
        KnockFormat.parse(text)
    with pytest.raises(ConfigError, match=needle) as info:  # the setting names its key
        ClientSettings.of(knock=text)
    assert info.value.key == "knock"


def test_portbytes_must_be_1_or_2() -> None:
    with pytest.raises(InvalidValue, match="portbytes"):
        KnockFormat.parse("PORT", portbytes=3)
    with pytest.raises(ConfigError, match="portbytes") as info:
        ClientSettings.of(portbytes=3)
    assert info.value.key == "portbytes"


def test_pack_errors() -> None:
    with pytest.raises(KnockError, match="does not fit in 1 byte"):
        KnockFormat.parse("PORT", portbytes=1).pack(KnockInputs(port=256), 0)
    with pytest.raises(KnockError, match="does not fit in 2 byte"):
        KnockFormat.parse("PORT").pack(KnockInputs(port=65536), 0)
    with pytest.raises(KnockError, match="flag3 is not set"):
        KnockFormat.parse("FLAG3").pack(KnockInputs(flags={0: 1}), 0)
    for bad in ("::1", "example.org", "10.1.1", ""):
        with pytest.raises(KnockError, match="IPv4"):
            KnockFormat.parse("CLIENT").pack(KnockInputs(client=bad), 0)


def test_unpack_errors() -> None:
    fmt = KnockFormat.parse("CLIENT,PORT,CHECKSUM,CHECKSUM")
    good = fmt.pack(KnockInputs("10.1.1.1", 22), 0)
    assert list(good) == [10, 1, 1, 1, 0, 22, 35, 35]
    assert fmt.unpack(good).shown == {"client": "10.1.1.1", "port": 22, "checksum": 35}
    with pytest.raises(KnockError, match="7 bytes, the format needs 8"):
        fmt.unpack(good[:-1])
    with pytest.raises(KnockError, match="checksum"):
        fmt.unpack(good[:-1] + b"\x24")  # the two checksums disagree
    with pytest.raises(KnockError, match="checksum"):
        fmt.unpack(b"\x0b" + good[1:])
    twice = KnockFormat.parse("FLAG0,PORT,FLAG0")
    assert twice.unpack(bytes([7, 0, 1, 7])).shown == {"flag0": 7, "port": 1}
    with pytest.raises(KnockError, match="FLAG0 appears twice with different values"):
        twice.unpack(bytes([7, 0, 1, 8]))
    assert KnockFormat.parse("RAND,RAND").unpack(b"\x01\x02").shown == {"rand": 2}


# --- pack/unpack round trips -------------------------------------------------------------

FIELD_NAMES = ["CLIENT", "IP", "PORT", "RAND", "CHECKSUM", *TIME_FIELDS] + [
    f"FLAG{m}" for m in (0, 1, 2, 7, 15)
]


@st.composite
def formats_and_inputs(draw: st.DrawFn) -> tuple[KnockFormat, KnockInputs, float]:
    names = draw(st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=24))
    names += draw(st.lists(st.just("CHECKSUM"), max_size=2))
    names = draw(st.permutations(names))
    portbytes = draw(st.sampled_from([1, 2]))
    fmt = KnockFormat.parse(",".join(names), portbytes=portbytes)
    inputs = KnockInputs(
        client=str(ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))),
        port=draw(st.integers(0, (1 << (8 * portbytes)) - 1)),
        flags={m: draw(st.integers(0, 100_000)) for m in fmt.flag_numbers()},
        rand=draw(st.integers(0, 10_000)),
    )
    now = draw(st.one_of(st.integers(0, 2**34), st.floats(0, 2**34)))
    return fmt, inputs, now


@settings(max_examples=300, deadline=None)
@given(formats_and_inputs(), st.booleans())
def test_pack_unpack_round_trip(case: tuple[KnockFormat, KnockInputs, float], local: bool) -> None:
    fmt, inputs, now = case
    packed = fmt.pack(inputs, now, localtime=local)
    assert len(packed) == fmt.length
    times = time_values(now, localtime=local)
    expected: dict[str, int | str] = {}
    for name in fmt.fields:
        if name == "CLIENT":
            expected["client"] = inputs.client
        elif name == "PORT":
            expected["port"] = inputs.port
        elif name == "RAND":
            expected["rand"] = inputs.rand % 256
        elif name in times:
            expected[name.lower()] = times[name]
        elif name.startswith("FLAG"):
            expected[name.lower()] = inputs.flags[int(name[4:])] % 256
    positions = [i for i, name in enumerate(_byte_names(fmt)) if name == "CHECKSUM"]
    others = sum(b for i, b in enumerate(packed) if i not in positions)
    if positions:
        expected["checksum"] = others % 256
        assert {packed[i] for i in positions} == {others % 256}
    fields = fmt.unpack(packed)
    assert fields.shown == expected
    assert (fields.client, fields.port) == (expected.get("client"), expected.get("port"))
    assert dict(fields.flags) == {m: inputs.flags[m] % 256 for m in fmt.flag_numbers()}
    assert dict(fields.times) == {n: times[n] for n in TIME_FIELDS if n in fmt.fields}


def _byte_names(fmt: KnockFormat) -> list[str]:
    return [name for name in fmt.fields for _ in range(fmt.width(name))]


# Digits of every kind (ASCII, Arabic-Indic, superscript, fullwidth) and what may surround
# them: the string test must take exactly what the pattern it replaced took.
_DIGITISH = st.text(st.sampled_from("0123456789\u0663\u00b2\uff11"), min_size=1, max_size=11)
_NAMEISH = st.text(st.sampled_from("FLAGflag0123456789\u0663\u00b2\uff11 -=x\n"), max_size=14)


@given(st.one_of(_NAMEISH, st.builds("{}{}".format, st.sampled_from(["FLAG", "flag"]), _DIGITISH),
                 st.text(max_size=14)))  # fmt: skip
def test_flag_number_takes_what_the_pattern_took(name: str) -> None:
    m = re.fullmatch(r"(?a)FLAG([0-9]{1,9})", name)
    assert flag_number(name) == (int(m[1]) if m else None)
    low = re.fullmatch(r"(?a)flag([0-9]{1,9})", name)
    assert flag_number(name, "flag") == (int(low[1]) if low else None)
