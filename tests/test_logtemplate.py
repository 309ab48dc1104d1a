"""Faked firewall log lines: format then match gives the fields back."""

from __future__ import annotations

import calendar
import locale
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioknock.codec.logtemplate import FIELDS, LogRecord, LogTemplate, syslog_date
from aioknock.config.settings import DEFAULT_FILEFORMAT


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("utc")
def test_syslog_date() -> None:
    assert syslog_date(calendar.timegm((2004, 11, 26, 14, 27, 2))) == "Nov 26 14:27:02"
    assert syslog_date(calendar.timegm((2004, 11, 6, 4, 7, 9))) == "Nov  6 04:07:09"
    assert syslog_date(calendar.timegm((2004, 1, 1, 0, 0, 0))) == "Jan  1 00:00:00"


@pytest.mark.usefixtures("utc")
def test_syslog_date_ignores_the_locale() -> None:
    for name in ("de_DE.UTF-8", "fr_FR.UTF-8", "C.UTF-8"):
        try:
            old = locale.setlocale(locale.LC_TIME, name)
        except locale.Error:
            continue
        try:
            assert syslog_date(calendar.timegm((2004, 12, 1, 0, 0, 0))) == "Dec  1 00:00:00"
        finally:
            locale.setlocale(locale.LC_TIME, old)


@pytest.mark.usefixtures("utc")
def test_default_iptables_template() -> None:
    line = LogTemplate(DEFAULT_FILEFORMAT).format(
        when=calendar.timegm((2004, 11, 26, 14, 27, 2)), client="10.1.1.1",
        remote="192.168.0.7", clientport=40000, remoteport=966,
    )  # fmt: skip
    assert line.startswith("Nov 26 14:27:02 localhost kernel: IN=eth0 OUT= SRC=10.1.1.1 ")
    assert " DST=192.168.0.7 " in line and " PROTO=TCP SPT=40000 DPT=966 " in line
    assert " SYN " in line and "\n" not in line
    assert LogTemplate(DEFAULT_FILEFORMAT).match(line + "\n") == LogRecord(
        "Nov 26 14:27:02", "10.1.1.1", "192.168.0.7", 40000, 966
    )


def test_match_inside_a_longer_syslog_line() -> None:
    template = LogTemplate("SRC=_CLIENT_ DST=_REMOTE_ DPT=_REMOTEPORT_ ")
    line = "Nov 26 14:27:02 fw kernel: [1234.5] IN=eth0 SRC=10.1.1.1 DST=10.2.2.2 DPT=22 SYN"
    assert template.match(line) == LogRecord("", "10.1.1.1", "10.2.2.2", 0, 22)
    assert template.match("SRC=10.1.1.1 DST=10.2.2.2 SPT=22 ") is None


def test_host_names_and_ipv6() -> None:
    template = LogTemplate(DEFAULT_FILEFORMAT)
    for remote in ("localhost", "knock-target.example.org", "fe80::1%eth0", "::1"):
        line = template.format(when=0, client="::1", remote=remote, clientport=1, remoteport=2)
        record = template.match(line)
        assert record is not None and (record.client, record.remote) == ("::1", remote)


def test_newline_in_template() -> None:
    template = LogTemplate("SRC=_CLIENT_\nDPT=_REMOTEPORT_\r\n")
    line = template.format(when=0, client="1.2.3.4", remote="x", clientport=1, remoteport=745)
    assert line == "SRC=1.2.3.4 DPT=745  "
    record = template.match(line)
    assert record is not None and (record.client, record.remoteport) == ("1.2.3.4", 745)


def test_repeated_field_must_agree() -> None:
    template = LogTemplate("a=_REMOTEPORT_ b=_REMOTEPORT_;")
    line = template.format(when=0, client="c", remote="r", clientport=1, remoteport=99)
    assert line == "a=99 b=99;"
    assert template.match(line) is not None
    assert template.match("a=99 b=98;") is None


# --- random templates --------------------------------------------------------------------

# Literal text between fields starts and ends with a character that no field value
# contains, so that the template reads back unambiguously.
EDGE = st.sampled_from(list(" =;,[]<>()|/\"'#@!*+?^$\\{}"))
MIDDLE = st.text(alphabet=st.characters(codec="ascii", exclude_characters="\r\n"), max_size=8)


@st.composite
def templates(draw: st.DrawFn) -> str:
    names = draw(st.lists(st.sampled_from(list(FIELDS)), min_size=1, max_size=7))
    parts = [draw(st.one_of(st.just(""), MIDDLE.map(lambda m: m + " ")))]
    for name in names:
        parts.append(name)
        parts.append(draw(EDGE) + draw(MIDDLE).replace("_", "-") + draw(EDGE))
    return "".join(parts)


ADDRESS = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    template=templates(), when=st.integers(0, 2**33), client=ADDRESS, remote=ADDRESS,
    clientport=st.integers(1024, 65535), remoteport=st.integers(1, 65535),
)  # fmt: skip
def test_format_then_match(
    template: str, when: int, client: str, remote: str, clientport: int, remoteport: int
) -> None:
    fmt = LogTemplate(template)
    line = fmt.format(when=when, client=client, remote=remote, clientport=clientport,
                      remoteport=remoteport)  # fmt: skip
    record = fmt.match(line)
    assert record is not None
    used = {name for name in FIELDS if name in template}
    assert record.date == (syslog_date(when) if "_DATE_" in used else "")
    assert record.client == (client if "_CLIENT_" in used else "")
    assert record.remote == (remote if "_REMOTE_" in used else "")
    assert record.clientport == (clientport if "_CLIENTPORT_" in used else 0)
    assert record.remoteport == (remoteport if "_REMOTEPORT_" in used else 0)
