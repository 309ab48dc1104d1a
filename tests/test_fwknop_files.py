"""fwknop's own files: fwknopd's access.conf and the client's ~/.fwknoprc (config/fwknop.py).

Every variable each reader takes, every refusal as its one exact line (file:line:
VARIABLE: why), includes, the Debian example, time zones for ACCESS_EXPIRE; properties
(arbitrary files only ever raise ConfigError and never show a key; rendered stanzas
read back the same); and the real fwknopd and fwknop, when installed, reading the same
files: what they report must agree with what these readers give.
"""

from __future__ import annotations

import base64
import calendar
import ipaddress
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aioknock.codec import spa
from aioknock.config.files import Layer
from aioknock.config.fwknopconf import read_access_file, read_fwknoprc
from aioknock.config.settings import ClientSettings
from aioknock.daemon import fwknopd as recognizer
from aioknock.errors import ConfigError

# A pair as `fwknop --key-gen` prints it (32-byte key, 64-byte HMAC key).
KEY_B64 = "yH/NjBa0qhbcGzH+t+IyGia4aa0Zsb8t054jNG0RyHE="
HMAC_B64 = (
    "vh0e60n2KqFMvEjRrwCQd3dJVz7FgDO7qlUEI+OrGjac2DW3Gw2wvZA87nvwXpyqmDX48ZYlPQgrrs8uMLgylw=="
)
KEYS = f"KEY_BASE64 {KEY_B64}\nHMAC_KEY_BASE64 {HMAC_B64}\n"
GOOD = f"SOURCE ANY\n{KEYS}"  # lines 1-3
DEBIAN_EXAMPLE = Path("/etc/fwknop/access.conf")
FWKNOP, FWKNOPD = shutil.which("fwknop"), shutil.which("fwknopd")
HASH_NUMBERS = {"md5": 1, "sha1": 2, "sha256": 3, "sha384": 4, "sha512": 5, "sha3_256": 6,
                "sha3_512": 7}  # fmt: skip  # lib/fko.h's fko_hmac_type_t


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    path.chmod(0o600)  # as fwknop wants its files
    return path


def one_line(err: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def stanza(tmp_path: Path, extra: str = "") -> recognizer.Stanza:
    (only,) = read_access_file(write(tmp_path / "access.conf", GOOD + extra))
    return only


def access_error(tmp_path: Path, text: str | bytes) -> str:
    path = write(tmp_path / "access.conf", text)
    with pytest.raises(ConfigError) as err:
        read_access_file(path)
    return one_line(err)


@pytest.fixture
def tz() -> Iterator[Callable[[str], None]]:
    """Sets the process's time zone (TZ) for the test; restores it after."""
    before = os.environ.get("TZ")

    def use(name: str) -> None:
        if name != "UTC" and not Path("/usr/share/zoneinfo", name).exists():
            pytest.skip(f"no time zone data for {name}")
        os.environ["TZ"] = name
        time.tzset()

    yield use
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


# ================================================================== access.conf


def test_a_key_gen_pair_is_one_stanza_with_fwknopds_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "access.conf", GOOD)
    (only,) = read_access_file(path)
    assert only.sources == recognizer.ANY
    assert only.keys.key == base64.b64decode(KEY_B64) and len(only.keys.key) == 32
    assert only.keys.hmac_key == base64.b64decode(HMAC_B64) and len(only.keys.hmac_key) == 64
    assert only.keys.hmac_digest == "sha256"
    assert (only.open_ports, only.restrict_ports) == ((), ())
    assert (only.fw_access_timeout, only.max_fw_timeout) == (30, 300)
    assert (only.require_source_address, only.require_username) == (False, "")
    assert only.access_expire is None
    assert only.where == f"{path}:1"


@pytest.mark.parametrize(
    ("line", "field", "expected"),
    [
        ("OPEN_PORTS tcp/22, UDP/53", "open_ports", (("tcp", 22), ("udp", 53))),
        ("OPEN_PORTS\ttcp/22,udp/53,tcp/65535", "open_ports",
         (("tcp", 22), ("udp", 53), ("tcp", 65535))),
        ("RESTRICT_PORTS tcp/23", "restrict_ports", (("tcp", 23),)),
        ("FW_ACCESS_TIMEOUT 45", "fw_access_timeout", 45),
        ("FW_ACCESS_TIMEOUT 0", "fw_access_timeout", 30),  # 0: fwknopd's default
        ("FW_ACCESS_TIMEOUT 8388608", "fw_access_timeout", 8388608),
        ("MAX_FW_TIMEOUT 600", "max_fw_timeout", 600),
        ("MAX_FW_TIMEOUT 0", "max_fw_timeout", 300),
        ("REQUIRE_SOURCE_ADDRESS Y", "require_source_address", True),
        ("REQUIRE_SOURCE_ADDRESS yes", "require_source_address", True),
        ("REQUIRE_SOURCE_ADDRESS N", "require_source_address", False),
        ("REQUIRE_SOURCE_ADDRESS no", "require_source_address", False),
        ("REQUIRE_SOURCE y", "require_source_address", True),  # fwknopd's older name
        ("REQUIRE_USERNAME alice", "require_username", "alice"),
        ("ACCESS_EXPIRE_EPOCH 1924991999", "access_expire", 1924991999.0),
        ("ACCESS_EXPIRE_EPOCH 0", "access_expire", None),  # 0: not set, as in fwknopd
        ("ENCRYPTION_MODE CBC", "fw_access_timeout", 30),  # accepted: it is what we do
        ("ENCRYPTION_MODE cbc", "fw_access_timeout", 30),
        ("FW_ACCESS_TIMEOUT 45   ", "fw_access_timeout", 45),  # trailing spaces
        ("FW_ACCESS_TIMEOUT 45 ; a comment", "fw_access_timeout", 45),  # ';' ends a value
        ("FW_ACCESS_TIMEOUT: 45", "fw_access_timeout", 45),  # a colon after the name
        ("FW_ACCESS_TIMEOUT 45\r", "fw_access_timeout", 45),  # CRLF
    ],
)  # fmt: skip
def test_each_variable(tmp_path: Path, line: str, field: str, expected: object) -> None:
    assert getattr(stanza(tmp_path, line + "\n"), field) == expected


@pytest.mark.parametrize("name", ["MD5", "SHA1", "SHA256", "SHA384", "SHA512", "SHA3_256",
                                  "SHA3_512", "sha512", "Sha3_256"])  # fmt: skip
def test_hmac_digest_type(tmp_path: Path, name: str) -> None:
    keys = stanza(tmp_path, f"HMAC_DIGEST_TYPE {name}\n").keys
    assert keys.hmac_digest == name.lower() and keys.hmac_digest in spa.HASHES


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("KEY pässwörd with spaces", "pässwörd with spaces".encode()),  # byte for byte
        ("KEY   spaced", b"spaced"),  # the value starts after the spaces
        ("KEY abc;def", b"abc"),  # fwknopd's value ends at ';'
        ("KEY " + "k" * 32, b"k" * 32),  # RIJNDAEL_MAX_KEYSIZE
        ("KEY_BASE64 YWJj", b"abc"),  # '=' padding is optional, as for fwknopd
        ("KEY_BASE64 YWJjZA==", b"abcd"),
        ("KEY_BASE64 YWJjZA", b"abcd"),
    ],
)
def test_key_forms(tmp_path: Path, line: str, key: bytes) -> None:
    text = f"SOURCE ANY\n{line}\nHMAC_KEY_BASE64 {HMAC_B64}\n"
    (only,) = read_access_file(write(tmp_path / "access.conf", text))
    assert only.keys.key == key


@pytest.mark.parametrize(
    ("line", "hmac_key"),
    [("HMAC_KEY another secret", b"another secret"), ("HMAC_KEY " + "h" * 128, b"h" * 128)],
)
def test_hmac_key_forms(tmp_path: Path, line: str, hmac_key: bytes) -> None:
    text = f"SOURCE ANY\nKEY_BASE64 {KEY_B64}\n{line}\n"
    (only,) = read_access_file(write(tmp_path / "access.conf", text))
    assert only.keys.hmac_key == hmac_key


@pytest.mark.parametrize(
    ("source", "networks"),
    [
        ("ANY", recognizer.ANY),
        ("any", recognizer.ANY),
        ("192.0.2.7", ["192.0.2.7/32"]),
        ("192.0.2.0/24, 198.51.100.7", ["192.0.2.0/24", "198.51.100.7/32"]),
        ("192.0.2.77/24", ["192.0.2.0/24"]),  # host bits masked off, as fwknopd does
        ("10.1.0.0/255.255.0.0", ["10.1.0.0/16"]),  # a dotted mask
        ("2001:db8::/32,  ::1", ["2001:db8::/32", "::1/128"]),  # IPv6: aioknock's addition
        ("192.0.2.0/24, ANY", [ipaddress.ip_network("192.0.2.0/24"), *recognizer.ANY]),
    ],
)
def test_source_forms(tmp_path: Path, source: str, networks: Any) -> None:
    text = f"SOURCE {source}\n{KEYS}"
    (only,) = read_access_file(write(tmp_path / "access.conf", text))
    assert only.sources == tuple(ipaddress.ip_network(n) for n in networks)


def test_comments_blank_lines_and_stanzas_in_file_order(tmp_path: Path) -> None:
    text = (f"# a comment\n; another\n\n\r\nSOURCE 192.0.2.0/24\n{KEYS}FW_ACCESS_TIMEOUT 5\n\n"
            f"  SOURCE: ANY\n{KEYS}RESTRICT_PORTS tcp/22\n")  # fmt: skip
    path = write(tmp_path / "access.conf", text)
    first, second = read_access_file(path)
    assert (first.where, first.fw_access_timeout, first.restrict_ports) == (f"{path}:5", 5, ())
    assert (second.where, second.fw_access_timeout) == (f"{path}:10", 30)
    assert second.sources == recognizer.ANY and second.restrict_ports == (("tcp", 22),)


def test_access_expire_is_midnight_local_standard_time(
    tmp_path: Path, tz: Callable[[str], None]
) -> None:
    """fwknopd's mktime() with tm_isdst = 0: local time, as if no summer time."""
    tz("UTC")
    day = calendar.timegm((2030, 7, 1, 0, 0, 0))
    assert stanza(tmp_path, "ACCESS_EXPIRE 07/01/2030\n").access_expire == day
    assert stanza(tmp_path, "ACCESS_EXPIRE 07/01/30\n").access_expire == day  # YY: 20YY
    assert stanza(tmp_path, "ACCESS_EXPIRE 7/1/2030\n").access_expire == day
    tz("Europe/Berlin")  # UTC+1, UTC+2 in summer: the summer date is still +1
    assert stanza(tmp_path, "ACCESS_EXPIRE 07/01/2030\n").access_expire == day - 3600
    winter = calendar.timegm((2030, 1, 15, 0, 0, 0)) - 3600
    assert stanza(tmp_path, "ACCESS_EXPIRE 01/15/2030\n").access_expire == winter
    tz("America/New_York")
    assert stanza(tmp_path, "ACCESS_EXPIRE 07/01/2030\n").access_expire == day + 5 * 3600


# --------------------------------------------------------------------- refusals

NOT_IMPLEMENTED_ACCESS = [  # every fwknopd 2.6.10 variable that aioknock does not implement
    "DESTINATION", "GPG_HOME_DIR", "GPG_EXE", "GPG_DECRYPT_ID", "GPG_DECRYPT_PW",
    "GPG_ALLOW_NO_PW", "GPG_REQUIRE_SIG", "GPG_DISABLE_SIG", "GPG_IGNORE_SIG_VERIFY_ERROR",
    "GPG_REMOTE_ID", "GPG_FINGERPRINT_ID", "ENABLE_CMD_EXEC", "ENABLE_CMD_SUDO_EXEC",
    "CMD_SUDO_EXEC_USER", "CMD_SUDO_EXEC_GROUP", "CMD_EXEC_USER", "CMD_EXEC_GROUP",
    "CMD_CYCLE_OPEN", "CMD_CYCLE_CLOSE", "CMD_CYCLE_TIMER", "FORCE_NAT", "FORCE_SNAT",
    "FORCE_MASQUERADE", "DISABLE_DNAT", "FORWARD_ALL",
]  # fmt: skip


@pytest.mark.parametrize("var", NOT_IMPLEMENTED_ACCESS)
def test_variables_aioknock_does_not_implement(tmp_path: Path, var: str) -> None:
    message = access_error(tmp_path, GOOD + f"{var} N\n")
    assert message.startswith(f"{tmp_path / 'access.conf'}:4: {var}: not implemented by aioknock (")


# (text after GOOD's three lines; "VARIABLE: message" of line 4)
REFUSED_LINE_4 = [
    ("FOO_BAR 1", "FOO_BAR: unknown variable (fwknopd does not read it)"),
    ("ENCRYPTION_MODE CTR", "ENCRYPTION_MODE: only CBC is implemented by aioknock, got 'CTR'"),
    ("ENCRYPTION_MODE legacy",
     "ENCRYPTION_MODE: only CBC is implemented by aioknock, got 'legacy'"),
    ("OPEN_PORTS tcp22", "OPEN_PORTS: 'tcp22': the protocol must be tcp or udp; expected "
     "tcp/PORT or udp/PORT separated by commas, such as tcp/22, udp/53"),
    ("OPEN_PORTS icmp/1", "OPEN_PORTS: 'icmp/1': the protocol must be tcp or udp; expected "
     "tcp/PORT or udp/PORT separated by commas, such as tcp/22, udp/53"),
    ("OPEN_PORTS tcp/0", "OPEN_PORTS: 'tcp/0': the port must be 1-65535; expected "
     "tcp/PORT or udp/PORT separated by commas, such as tcp/22, udp/53"),
    ("RESTRICT_PORTS udp/65536", "RESTRICT_PORTS: 'udp/65536': the port must be 1-65535; "
     "expected tcp/PORT or udp/PORT separated by commas, such as tcp/22, udp/53"),
    ("OPEN_PORTS tcp/²", "OPEN_PORTS: 'tcp/²': the port must be 1-65535; expected "
     "tcp/PORT or udp/PORT separated by commas, such as tcp/22, udp/53"),
    ("OPEN_PORTS tcp/22,", "OPEN_PORTS: an empty entry: the protocol must be tcp or udp; "
     "expected tcp/PORT or udp/PORT separated by commas, such as tcp/22, udp/53"),
    ("FW_ACCESS_TIMEOUT 12abc", "FW_ACCESS_TIMEOUT: expected whole seconds 0-8388608 "
     "(0: the default, 30), got '12abc'"),
    ("FW_ACCESS_TIMEOUT -1", "FW_ACCESS_TIMEOUT: expected whole seconds 0-8388608 "
     "(0: the default, 30), got '-1'"),
    ("MAX_FW_TIMEOUT 8388609", "MAX_FW_TIMEOUT: expected whole seconds 0-8388608 "
     "(0: the default, 300), got '8388609'"),
    ("HMAC_DIGEST_TYPE sha224", "HMAC_DIGEST_TYPE: expected one of MD5, SHA1, SHA256, SHA384, "
     "SHA512, SHA3_256, SHA3_512, got 'sha224'"),
    ("REQUIRE_SOURCE_ADDRESS true", "REQUIRE_SOURCE_ADDRESS: expected Y or N, got 'true' "
     "(fwknopd would read it as N)"),
    ("REQUIRE_SOURCE Yep", "REQUIRE_SOURCE: expected Y or N, got 'Yep' "
     "(fwknopd would read it as Y)"),
    ("REQUIRE_USERNAME bob ", "REQUIRE_USERNAME: ends in spaces or tabs, which fwknopd keeps "
     "(no packet's user would match); remove them"),
    ("REQUIRE_USERNAME a:b", "REQUIRE_USERNAME: the user name holds ':', so no packet could "
     "carry it"),
    ("ACCESS_EXPIRE 2030-07-01", "ACCESS_EXPIRE: expected MM/DD/YYYY such as 12/31/2030, "
     "got '2030-07-01'"),
    ("ACCESS_EXPIRE 02/30/2030", "ACCESS_EXPIRE: no such date (MM/DD/YYYY from 1970): "
     "'02/30/2030'"),
    ("ACCESS_EXPIRE 13/01/2030", "ACCESS_EXPIRE: no such date (MM/DD/YYYY from 1970): "
     "'13/01/2030'"),
    ("ACCESS_EXPIRE 07/01/1969", "ACCESS_EXPIRE: no such date (MM/DD/YYYY from 1970): "
     "'07/01/1969'"),
    ("ACCESS_EXPIRE_EPOCH soon", "ACCESS_EXPIRE_EPOCH: expected seconds since 1970 such as "
     "1924991999, got 'soon'"),
    ("ACCESS_EXPIRE_EPOCH -5", "ACCESS_EXPIRE_EPOCH: expected seconds since 1970 such as "
     "1924991999, got '-5'"),
    ("KEY_BASE64 YWJj", "KEY_BASE64: already set in this stanza at line 2; keep one"),
    ("KEY other", "KEY: the encryption key is already set by KEY_BASE64 at line 2; keep one"),
    ("HMAC_KEY other", "HMAC_KEY: the HMAC key is already set by HMAC_KEY_BASE64 at line 3; "
     "keep one"),
    ("SOURCE", "SOURCE: has no value (a value cannot start with ';')"),
    ("OPEN_PORTS ;tcp/22", "OPEN_PORTS: has no value (a value cannot start with ';')"),
    ("source ANY", "unknown variable; fwknopd's names are upper case: SOURCE"),
    ("  # an indented comment", "a comment must start in the first column (fwknopd reads an "
     "indented '#' as a variable name)"),
    (" \t ", "a line of only spaces or tabs, which fwknopd refuses; make it empty"),
    ("%include_keys", "%include_keys: has no value (a value cannot start with ';')"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), REFUSED_LINE_4)
def test_refused_lines(tmp_path: Path, line: str, message: str) -> None:
    assert access_error(tmp_path, GOOD + line + "\n") == f"{tmp_path / 'access.conf'}:4: {message}"


def test_same_variable_twice_names_both_lines(tmp_path: Path) -> None:
    text = GOOD + "FW_ACCESS_TIMEOUT 5\nFW_ACCESS_TIMEOUT 6\n"
    path = tmp_path / "access.conf"
    assert access_error(tmp_path, text) == (
        f"{path}:5: FW_ACCESS_TIMEOUT: already set in this stanza at line 4; keep one"
    )
    text = GOOD + "REQUIRE_SOURCE Y\nREQUIRE_SOURCE_ADDRESS Y\n"
    assert access_error(tmp_path, text) == (
        f"{path}:5: REQUIRE_SOURCE_ADDRESS: the source address requirement is already set by "
        "REQUIRE_SOURCE at line 4; keep one"
    )
    text = GOOD + "ACCESS_EXPIRE 01/01/2030\nACCESS_EXPIRE_EPOCH 1\n"
    assert access_error(tmp_path, text) == (
        f"{path}:5: ACCESS_EXPIRE_EPOCH: the expiry is already set by ACCESS_EXPIRE at line 4; "
        "keep one"
    )


def test_a_value_may_repeat_in_another_stanza(tmp_path: Path) -> None:
    text = GOOD + "FW_ACCESS_TIMEOUT 5\n" + GOOD + "FW_ACCESS_TIMEOUT 6\n"
    first, second = read_access_file(write(tmp_path / "access.conf", text))
    assert (first.fw_access_timeout, second.fw_access_timeout) == (5, 6)


# (the whole file; line; "VARIABLE: message")
REFUSED_STANZAS = [
    (f"SOURCE ANY\nKEY_BASE64 {KEY_B64}\n", 1, "SOURCE: this stanza has no HMAC_KEY or "
     "HMAC_KEY_BASE64; aioknock requires an HMAC key in every stanza (a packet without HMAC is "
     "not authenticated)"),
    (f"SOURCE ANY\nHMAC_KEY_BASE64 {HMAC_B64}\n", 1, "SOURCE: this stanza has no KEY or "
     "KEY_BASE64 (aioknock does not implement GnuPG: every stanza needs one)"),
    (f"{GOOD}SOURCE 192.0.2.1\nKEY_BASE64 {KEY_B64}\nSOURCE ANY\n{KEYS}", 4, "SOURCE: this "
     "stanza has no HMAC_KEY or HMAC_KEY_BASE64; aioknock requires an HMAC key in every stanza "
     "(a packet without HMAC is not authenticated)"),
    (f"KEY_BASE64 {KEY_B64}\n{GOOD}", 1, "KEY_BASE64: before any SOURCE line (fwknopd skips "
     "it): a stanza starts with SOURCE"),
    ("SOURCE ANY\nKEY abcdef\nHMAC_KEY abcdef\n", 3, "HMAC_KEY: the same as the stanza's "
     "encryption key, which fwknopd refuses (fwknop --key-gen writes a pair)"),
    ("SOURCE ANY\nHMAC_KEY abcd\nKEY_BASE64 YWJjZA\n", 2, "HMAC_KEY: the same as the stanza's "
     "encryption key, which fwknopd refuses (fwknop --key-gen writes a pair)"),
    ("SOURCE 1.2.3\n", 1, "SOURCE: '1.2.3' is not an IP address; expected ANY or addresses and "
     "networks separated by commas, such as 192.0.2.0/24, 198.51.100.7, 2001:db8::/32"),
    ("SOURCE 010.0.0.1\n", 1, "SOURCE: '010.0.0.1' is not an IP address; expected ANY or "
     "addresses and networks separated by commas, such as 192.0.2.0/24, 198.51.100.7, "
     "2001:db8::/32"),
    ("SOURCE fe80::1%eth0\n", 1, "SOURCE: 'fe80::1%eth0' is not an IP address; expected ANY or "
     "addresses and networks separated by commas, such as 192.0.2.0/24, 198.51.100.7, "
     "2001:db8::/32"),
    ("SOURCE 192.0.2.0/33\n", 1, "SOURCE: '33' is not a network mask for 192.0.2.0; expected "
     "ANY or addresses and networks separated by commas, such as 192.0.2.0/24, 198.51.100.7, "
     "2001:db8::/32"),
    ("SOURCE 192.0.2.0/\n", 1, "SOURCE: '' is not a network mask for 192.0.2.0; expected "
     "ANY or addresses and networks separated by commas, such as 192.0.2.0/24, 198.51.100.7, "
     "2001:db8::/32"),
    ("SOURCE 10.0.0.0/255.0.255.0\n", 1, "SOURCE: '255.0.255.0' is not a network mask for "
     "10.0.0.0; expected ANY or addresses and networks separated by commas, such as "
     "192.0.2.0/24, 198.51.100.7, 2001:db8::/32"),
    ("SOURCE 192.0.2.1,,192.0.2.2\n", 1, "SOURCE: an empty entry; expected ANY or addresses "
     "and networks separated by commas, such as 192.0.2.0/24, 198.51.100.7, 2001:db8::/32"),
    ("SOURCE 0.0.0.0/0\n", 1, "SOURCE: '0.0.0.0/0': a /0 network, which fwknopd refuses; "
     "write ANY"),
    ("SOURCE ::/0\n", 1, "SOURCE: '::/0': a /0 network, which fwknopd refuses; write ANY"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "message"), REFUSED_STANZAS)
def test_refused_stanzas(tmp_path: Path, text: str, line: int, message: str) -> None:
    assert access_error(tmp_path, text) == f"{tmp_path / 'access.conf'}:{line}: {message}"


SECRET = "s3cr3t-Passphrase"
HIDDEN = "not 'VARIABLE value' with a known upper-case VARIABLE"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("KEY __CHANGEME__", "KEY: still __CHANGEME__: put a key here (fwknop --key-gen "
         "writes a pair)"),
        ("KEY_BASE64 __changeme__", "KEY_BASE64: still __CHANGEME__: put a key here "
         "(fwknop --key-gen writes a pair)"),
        (f"KEY {SECRET} ", "KEY: ends in spaces or tabs, which fwknopd keeps as part of the key "
         "(an rc file's key cannot hold them); remove them"),
        (f"KEY {SECRET}{'x' * 16}", "KEY: 33 bytes; fwknop's encryption key is at most 32 "
         "bytes (fwknopd would load it, then accept no packet)"),
        ("KEY " + "é" * 17, "KEY: 34 bytes; fwknop's encryption key is at most 32 bytes "
         "(fwknopd would load it, then accept no packet)"),  # bytes, not characters
        (f"KEY_BASE64 {base64.b64encode(bytes(33)).decode()}", "KEY_BASE64: 33 bytes; fwknop's "
         "encryption key is at most 32 bytes (fwknopd would load it, then accept no packet)"),
        (f"KEY_BASE64 {SECRET}$", "KEY_BASE64: not base64 (as fwknop --key-gen writes it): "
         "only A-Z, a-z, 0-9, '+', '/' and a final '=' may appear"),
        ("KEY_BASE64 YWJj=ZGVm", "KEY_BASE64: not base64: '=' may only end it (fwknopd "
         "ignores what follows)"),
        ("KEY_BASE64 YWJjZ", "KEY_BASE64: not base64: one character too many or too few"),
        ("KEY_BASE64 ==", "KEY_BASE64: decodes to no bytes"),
    ],
)  # fmt: skip
def test_refused_keys(tmp_path: Path, line: str, message: str) -> None:
    text = f"SOURCE ANY\n{line}\nHMAC_KEY_BASE64 {HMAC_B64}\n"
    got = access_error(tmp_path, text)
    assert got == f"{tmp_path / 'access.conf'}:2: {message}"
    assert SECRET not in got


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("HMAC_KEY __CHANGEME__", "HMAC_KEY: still __CHANGEME__: put a key here (fwknop "
         "--key-gen writes a pair)"),
        ("HMAC_KEY_BASE64 __CHANGEME__", "HMAC_KEY_BASE64: still __CHANGEME__: put a key here "
         "(fwknop --key-gen writes a pair)"),
        ("HMAC_KEY " + SECRET * 8, "HMAC_KEY: 136 bytes; fwknop's HMAC key is at most 128 "
         "bytes (fwknopd would load it, then accept no packet)"),
        (f"HMAC_KEY_BASE64 {base64.b64encode(bytes(129)).decode()}", "HMAC_KEY_BASE64: 129 "
         "bytes; fwknop's HMAC key is at most 128 bytes (fwknopd would load it, then accept no "
         "packet)"),
        (f"HMAC_KEY_BASE64 {SECRET}!", "HMAC_KEY_BASE64: not base64 (as fwknop --key-gen writes "
         "it): only A-Z, a-z, 0-9, '+', '/' and a final '=' may appear"),
    ],
)  # fmt: skip
def test_refused_hmac_keys(tmp_path: Path, line: str, message: str) -> None:
    text = f"SOURCE ANY\nKEY_BASE64 {KEY_B64}\n{line}\n"
    got = access_error(tmp_path, text)
    assert got == f"{tmp_path / 'access.conf'}:3: {message}"
    assert SECRET not in got


def test_a_lone_word_is_not_shown(tmp_path: Path) -> None:
    """A passphrase pasted alone on a line is no variable name to show."""
    for line in (SECRET, f"{SECRET} and more", "SECRETWORD"):
        got = access_error(tmp_path, f"{GOOD}{line}\n")
        hidden = "(the line is not shown: it may be a secret)"
        assert got == f"{tmp_path / 'access.conf'}:4: {HIDDEN} {hidden}"
        assert SECRET not in got and "SECRETWORD" not in got


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", ": no SOURCE line: fwknopd needs at least one stanza"),
        (b"# only a comment\n", ": no SOURCE line: fwknopd needs at least one stanza"),
        (b"SOURCE ANY\n\xff\xfe\n", ":2: not UTF-8 text"),
        (b"SOURCE ANY\nKEY a\0b\n", ":2: holds a NUL byte (a binary file?)"),
        (b"SOURCE ANY\nKEY " + b"k" * 1020 + b"\n", ":2: 1,024 bytes, longer than fwknop's "
         "1,023-byte line buffer: it would read the rest as another line"),
    ],
)  # fmt: skip
def test_refused_files(tmp_path: Path, data: bytes, message: str) -> None:
    assert access_error(tmp_path, data) == f"{tmp_path / 'access.conf'}{message}"


def test_a_line_of_1023_bytes_is_read(tmp_path: Path) -> None:
    line = "REQUIRE_USERNAME " + "u" * (1023 - 17)
    assert len(line) == 1023
    with pytest.raises(ConfigError, match="user name must be 1-64"):  # read, then refused
        read_access_file(write(tmp_path / "access.conf", f"{GOOD}{line}\n"))


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(ConfigError) as err:
        read_access_file(missing)
    assert one_line(err) == f"{missing}: cannot read file: No such file or directory"
    with pytest.raises(ConfigError) as err:
        read_access_file(tmp_path)
    assert one_line(err) == f"{tmp_path}: cannot read file: Is a directory"
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo)  # would block a plain open() for ever
    with pytest.raises(ConfigError) as err:
        read_access_file(fifo)
    assert one_line(err) == f"{fifo}: cannot read file: not a regular file (a FIFO or a device?)"


# ---------------------------------------------------------------------- includes


def test_include_adds_stanzas_and_the_open_one_goes_on(tmp_path: Path) -> None:
    """fwknopd's order: the open stanza is first in the list, and lines after the
    %include still belong to it; the included file's stanzas end with it."""
    inc = write(tmp_path / "more" / "inc.conf", f"SOURCE 10.0.0.0/8\n{KEYS}")
    path = write(tmp_path / "access.conf", f"{GOOD}%include more/inc.conf\nFW_ACCESS_TIMEOUT 77\n")
    first, second = read_access_file(path)
    assert (first.where, first.fw_access_timeout, first.sources) == (
        f"{path}:1",
        77,
        recognizer.ANY,
    )
    assert (second.where, second.fw_access_timeout) == (f"{inc}:1", 30)
    assert second.sources == (ipaddress.ip_network("10.0.0.0/8"),)


def test_include_errors_name_the_included_file(tmp_path: Path) -> None:
    inc = write(tmp_path / "inc.conf", f"FW_ACCESS_TIMEOUT 5\n{GOOD}")
    write(tmp_path / "access.conf", f"%include {inc}\n")
    got = access_error(tmp_path, f"%include {inc}\n")
    assert got == (f"{inc}:1: FW_ACCESS_TIMEOUT: before any SOURCE line (fwknopd skips it): "
                   "a stanza starts with SOURCE")  # fmt: skip
    write(inc, "SOURCE ANY\nKEY abcdef\n")
    assert access_error(tmp_path, f"%include {inc}\n").startswith(
        f"{inc}:1: SOURCE: this stanza has no HMAC_KEY"
    )


def test_include_of_what_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "access.conf"
    assert access_error(tmp_path, f"{GOOD}%include missing.conf\n") == (
        f"{path}:4: %include: cannot read {tmp_path / 'missing.conf'}: No such file or directory"
    )
    assert access_error(tmp_path, f"{GOOD}%include_folder nothere\n") == (
        f"{path}:4: %include_folder: cannot read folder {tmp_path / 'nothere'}: "
        "No such file or directory"
    )
    assert access_error(tmp_path, f"{GOOD}%include_keys nokeys\n") == (
        f"{path}:4: %include_keys: cannot read {tmp_path / 'nokeys'}: No such file or directory"
    )


def test_includes_nest_three_files_deep_at_most(tmp_path: Path) -> None:
    write(tmp_path / "c.conf", f"SOURCE 192.0.2.3\n{KEYS}")
    write(tmp_path / "b.conf", f"SOURCE 192.0.2.2\n{KEYS}%include c.conf\n")
    path = write(tmp_path / "access.conf", f"{GOOD}%include b.conf\n")
    assert len(read_access_file(path)) == 3
    write(tmp_path / "c.conf", f"SOURCE 192.0.2.3\n{KEYS}%include d.conf\n")
    write(tmp_path / "d.conf", f"SOURCE 192.0.2.4\n{KEYS}")
    with pytest.raises(ConfigError) as err:
        read_access_file(path)
    assert one_line(err) == (f"{tmp_path / 'c.conf'}:4: %include: includes nested deeper than "
                             "3 files (fwknopd's limit)")  # fmt: skip


def test_include_cycles_and_repeats_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "b.conf", f"SOURCE 192.0.2.2\n{KEYS}%include access.conf\n")
    got = access_error(tmp_path, f"{GOOD}%include b.conf\n")
    path, real = tmp_path / "access.conf", os.path.realpath(tmp_path)
    assert got == (f"{tmp_path / 'b.conf'}:4: %include: include cycle: {real}/access.conf -> "
                   f"{real}/b.conf -> {real}/access.conf")  # fmt: skip
    write(tmp_path / "b.conf", f"SOURCE 192.0.2.2\n{KEYS}")
    got = access_error(tmp_path, f"{GOOD}%include b.conf\n%include ./b.conf\n")
    assert got == (f"{path}:5: %include: {tmp_path}/b.conf is already read (its stanzas "
                   "would be there twice)")  # fmt: skip


def test_include_folder_reads_its_conf_files_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "access.d"
    for name, address in [("b.conf", "192.0.2.2"), ("a.conf", "192.0.2.1"),
                          ("c.conf~", "192.0.2.3"),  # fwknopd: the last extension starts .conf
                          ("d.txt", "192.0.2.4"), ("e.conf.bak", "192.0.2.5")]:  # fmt: skip
        write(folder / name, f"SOURCE {address}\n{KEYS}")
    path = write(tmp_path / "access.conf", f"{GOOD}%include_folder access.d/\n")
    got = [s.where for s in read_access_file(path)]
    assert got == [f"{path}:1", f"{folder}/a.conf:1", f"{folder}/b.conf:1", f"{folder}/c.conf~:1"]


def test_include_keys_reads_the_open_stanzas_keys(tmp_path: Path) -> None:
    keys = write(tmp_path / "keys", f"# from fwknop --key-gen\n{KEYS}")
    path = write(tmp_path / "access.conf", "SOURCE ANY\n%include_keys keys\nFW_ACCESS_TIMEOUT 9\n")
    (only,) = read_access_file(path)
    assert only.keys.key == base64.b64decode(KEY_B64) and only.fw_access_timeout == 9
    write(keys, f"{KEYS}HMAC_DIGEST_TYPE SHA512\n")
    assert access_error(tmp_path, "SOURCE ANY\n%include_keys keys\n") == (
        f"{keys}:3: HMAC_DIGEST_TYPE: fwknopd reads only KEY, KEY_BASE64, HMAC_KEY and "
        "HMAC_KEY_BASE64 from an %include_keys file (it ignores the rest)"
    )
    write(keys, KEYS)
    assert access_error(tmp_path, f"SOURCE ANY\nKEY abc\n%include_keys {keys}\n") == (
        f"{keys}:1: KEY_BASE64: the encryption key is already set by KEY at "
        f"{tmp_path / 'access.conf'}:2; keep one"
    )
    assert access_error(tmp_path, f"%include_keys {keys}\n{GOOD}") == (
        f"{tmp_path / 'access.conf'}:1: %include_keys: before any SOURCE line (fwknopd skips "
        "it): a stanza starts with SOURCE"
    )


# ------------------------------------------------------------- the Debian example


@pytest.mark.skipif(not DEBIAN_EXAMPLE.is_file(), reason="fwknop-server's example not installed")
def test_the_debian_example(tmp_path: Path) -> None:
    """Refused as installed (its keys are __CHANGEME__); read once they are set."""
    text = DEBIAN_EXAMPLE.read_text(encoding="utf-8")
    lines = text.split("\n")
    source = next(n for n, line in enumerate(lines, 1) if line.startswith("SOURCE"))
    with pytest.raises(ConfigError) as err:
        read_access_file(DEBIAN_EXAMPLE)
    assert one_line(err) == (f"{DEBIAN_EXAMPLE}:{source + 1}: KEY_BASE64: still __CHANGEME__: "
                             "put a key here (fwknop --key-gen writes a pair)")  # fmt: skip
    keyed = re.sub(r"^(KEY_BASE64\s+)__CHANGEME__", rf"\g<1>{KEY_B64}", text, flags=re.M)
    keyed = re.sub(r"^(HMAC_KEY_BASE64\s+)__CHANGEME__", rf"\g<1>{HMAC_B64}", keyed, flags=re.M)
    path = write(tmp_path / "access.conf", keyed)
    (only,) = read_access_file(path)
    assert only.where == f"{path}:{source}" and only.sources == recognizer.ANY
    assert only.keys.key == base64.b64decode(KEY_B64)


# ===================================================================== .fwknoprc


def rc(tmp_path: Path, text: str) -> Path:
    return write(tmp_path / "fwknoprc", text)


def rc_error(tmp_path: Path, text: str, stanza: str = "s") -> str:
    path = rc(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        read_fwknoprc(path, stanza)
    return one_line(err)


FULL_RC = f"""\
# .fwknoprc
[default]
DIGEST_TYPE         SHA512
HMAC_DIGEST_TYPE    SHA384
VERBOSE             Y
USE_HMAC            Y
NO_SAVE_ARGS        Y
ENCRYPTION_MODE     CBC

[s]
SPA_SERVER          knock.example.net
SPA_SERVER_PORT     40001
SPA_SERVER_PROTO    UDP
ACCESS              tcp/22,udp/53
ALLOW_IP            198.18.0.2
KEY_BASE64          {KEY_B64}
HMAC_KEY_BASE64     {HMAC_B64}
FW_TIMEOUT          45
SPOOF_USER          bob
"""


def test_every_mapped_variable(tmp_path: Path) -> None:
    path = rc(tmp_path, FULL_RC)
    layer = read_fwknoprc(path, "s")
    assert isinstance(layer, Layer)
    assert layer.values == {
        "protocol": "spa", "digest_type": "sha512", "hmac_digest_type": "sha384", "debug": "1",
        "remote": "knock.example.net", "spa_server_port": "40001", "spa_server_proto": "udp",
        "access": "tcp/22,udp/53", "allow_ip": "198.18.0.2", "key_base64": KEY_B64,
        "hmac_key_base64": HMAC_B64, "client_timeout": "45", "spoof_user": "bob",
    }  # fmt: skip
    assert layer.where["protocol"] == str(path)
    assert layer.where["digest_type"] == f"{path}:3"
    assert layer.where["spoof_user"] == f"{path}:19"
    for key in layer.values:
        assert ClientSettings.row(key) is not None, key  # every key is a client setting


def test_passphrases_and_allow_ip_forms(tmp_path: Path) -> None:
    text = "[s]\nKEY pass;word\nHMAC_KEY: other#comment\nALLOW_IP Source\nSPA_SERVER h # x\n"
    values = read_fwknoprc(rc(tmp_path, text), "s").values
    assert (values["key"], values["hmac_key"]) == ("pass", "other")  # fwknop's value ends there
    assert (values["allow_ip"], values["remote"]) == ("source", "h")


def test_the_named_stanza_overrides_default(tmp_path: Path) -> None:
    text = (
        "[default]\nSPA_SERVER_PORT 1111\nFW_TIMEOUT 5\nVERBOSE Y\n[other]\nUSE_GPG Y\n"
        "garbage that fwknop never reads\n[MySSH]\nSPA_SERVER_PORT 2222\nVERBOSE N\n"
    )
    path = rc(tmp_path, text)
    layer = read_fwknoprc(path, "myssh")  # stanza names match without regard to case
    assert layer.values["spa_server_port"] == "2222" and layer.where["spa_server_port"] == (
        f"{path}:9"
    )
    assert layer.values["client_timeout"] == "5" and layer.values["debug"] == "0"
    assert read_fwknoprc(path, "default").values["spa_server_port"] == "1111"


def test_a_stanza_in_two_parts(tmp_path: Path) -> None:
    text = "[s]\nSPA_SERVER h\n[default]\nFW_TIMEOUT 5\n[S]\nSPA_SERVER_PORT 9\n"
    values = read_fwknoprc(rc(tmp_path, text), "s").values
    assert (values["remote"], values["spa_server_port"], values["client_timeout"]) == (
        "h", "9", "5",
    )  # fmt: skip
    assert rc_error(tmp_path, text + "[s]\nSPA_SERVER g\n") == (
        f"{tmp_path / 'fwknoprc'}:8: SPA_SERVER: set twice in [s], at lines 2 and 8; keep one"
    )


def test_a_missing_stanza_lists_the_ones_there(tmp_path: Path) -> None:
    path = tmp_path / "fwknoprc"
    assert rc_error(tmp_path, "[default]\n[a]\n[b c]\n", "nope") == (
        f"{path}: no stanza [nope]; the file has [default], [a], [b c]"
    )
    assert rc_error(tmp_path, "# nothing\n", "nope") == (
        f"{path}: no stanza [nope]; the file has no [stanza] lines"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("USE_HMAC N", "USE_HMAC: N: aioknock always uses HMAC (a packet without one is not "
         "authenticated); remove the line"),
        ("USE_HMAC yes", "USE_HMAC: expected Y, got 'yes' (fwknop would read it as N, and "
         "aioknock always uses HMAC)"),
        ("ENCRYPTION_MODE legacy", "ENCRYPTION_MODE: only CBC is implemented by aioknock, "
         "got 'legacy'"),
        ("ALLOW_IP resolve", "ALLOW_IP: resolve (asking a web service for this host's address) "
         "is not implemented by aioknock; use source or an address"),
        ("VERBOSE loud", "VERBOSE: expected Y, N or a number, got 'loud'"),
        ("CLIENT_TIMEOUT 60", "CLIENT_TIMEOUT: unknown variable (fwknop does not read it)"),
        ("spa_server h", "unknown variable; fwknop's names are upper case: SPA_SERVER"),
        ("SPA_SERVER", "SPA_SERVER: has no value (a value ends at the first space, tab, '#' "
         "or ';')"),
        ("SPA_SERVER #h", "SPA_SERVER: has no value (a value ends at the first space, tab, '#' "
         "or ';')"),
        ("ACCESS tcp/22, udp/53", "ACCESS: text after the value: fwknop reads only 'tcp/22,' "
         "(a value ends at the first space, tab, '#' or ';'); remove the spaces or what follows "
         "them"),
        (f"KEY {SECRET} phrase", "KEY: text after the value: fwknop reads only (not shown: a "
         "secret) (a value ends at the first space, tab, '#' or ';'); remove the spaces or what "
         "follows them"),
        (SECRET, "not 'VARIABLE value' with a known upper-case VARIABLE (the line is not shown: "
         "it may be a secret)"),
        ("  ; indented", "a comment must start in the first column (fwknop reads an indented "
         "'#' as a variable name)"),
        ("  ", "a line of only spaces or tabs, which fwknop refuses; make it empty"),
        ("[s] [t]", "text after '[s]', which fwknop ignores; remove it"),
    ],
)  # fmt: skip
def test_refused_rc_lines(tmp_path: Path, line: str, message: str) -> None:
    got = rc_error(tmp_path, f"[s]\nSPA_SERVER_PORT 1\n{line}\n")
    assert got == f"{tmp_path / 'fwknoprc'}:3: {message}"
    assert SECRET not in got


NOT_IMPLEMENTED_RC = [  # every fwknop 2.6.10 rc variable that aioknock does not implement
    "SPA_SOURCE_PORT", "TIME_OFFSET", "USE_GPG", "USE_GPG_AGENT", "GPG_RECIPIENT",
    "GPG_SIGNER", "GPG_HOMEDIR", "GPG_EXE", "GPG_SIGNING_PW", "GPG_SIGNING_PW_BASE64",
    "GPG_NO_SIGNING_PW", "SPOOF_SOURCE_IP", "RAND_PORT", "USE_WGET_USER_AGENT", "KEY_FILE",
    "HMAC_KEY_FILE", "NAT_ACCESS", "HTTP_USER_AGENT", "RESOLVE_URL", "SERVER_RESOLVE_IPV4",
    "NAT_LOCAL", "NAT_RAND_PORT", "NAT_PORT", "RESOLVE_IP_HTTP", "RESOLVE_IP_HTTPS",
    "RESOLVE_HTTP_ONLY", "WGET_CMD",
]  # fmt: skip


@pytest.mark.parametrize("var", NOT_IMPLEMENTED_RC)
def test_rc_variables_aioknock_does_not_implement(tmp_path: Path, var: str) -> None:
    got = rc_error(tmp_path, f"[default]\n{var} {SECRET}\n[s]\n")
    assert got.startswith(f"{tmp_path / 'fwknoprc'}:2: {var}: not implemented by aioknock (")
    assert SECRET not in got


@pytest.mark.parametrize(
    ("value", "debug"), [("Y", "1"), ("y", "1"), ("N", "0"), ("0", "0"), ("3", "1")]
)
def test_verbose(tmp_path: Path, value: str, debug: str) -> None:
    assert read_fwknoprc(rc(tmp_path, f"[s]\nVERBOSE {value}\n"), "s").values["debug"] == debug


def test_accepted_variables_that_add_nothing(tmp_path: Path) -> None:
    text = "[s]\nUSE_HMAC y\nNO_SAVE_ARGS N\nENCRYPTION_MODE cbc\n"
    assert read_fwknoprc(rc(tmp_path, text), "s").values == {"protocol": "spa"}


def test_both_key_forms_in_effect_are_refused(tmp_path: Path) -> None:
    """fwknop uses KEY when both apply, even KEY from [default]; aioknock would not."""
    text = f"[default]\nKEY from-default\n[s]\nKEY_BASE64 {KEY_B64}\n"
    assert rc_error(tmp_path, text) == (
        f"{tmp_path / 'fwknoprc'}:4: KEY_BASE64: KEY (line 2) and KEY_BASE64 (line 4) both "
        "apply to [s], and fwknop would use KEY; keep one"
    )
    text = f"[s]\nHMAC_KEY_BASE64 {HMAC_B64}\nHMAC_KEY other\n"
    assert rc_error(tmp_path, text).endswith(":3: HMAC_KEY: HMAC_KEY (line 3) and "
                                             "HMAC_KEY_BASE64 (line 2) both apply to [s], and "
                                             "fwknop would use HMAC_KEY; keep one")  # fmt: skip


def test_lines_before_any_stanza(tmp_path: Path) -> None:
    assert rc_error(tmp_path, "SPA_SERVER h\n[s]\n") == (
        f"{tmp_path / 'fwknoprc'}:1: before any [stanza] line, where fwknop ignores it; put it "
        "under [default]"
    )
    assert read_fwknoprc(rc(tmp_path, "# c\n  \n[s]\n"), "s").values == {"protocol": "spa"}


def test_rc_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        read_fwknoprc(tmp_path / "none", "s")
    assert one_line(err) == f"{tmp_path / 'none'}: cannot read file: No such file or directory"
    path = write(tmp_path / "fwknoprc", b"[s]\nKEY \xff\n")
    with pytest.raises(ConfigError) as err:
        read_fwknoprc(path, "s")
    assert one_line(err) == f"{path}:2: not UTF-8 text"


# ==================================================================== properties

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
ACCESS_WORDS = [
    "SOURCE", "KEY", "KEY_BASE64", "HMAC_KEY", "HMAC_KEY_BASE64", "HMAC_DIGEST_TYPE",
    "OPEN_PORTS", "RESTRICT_PORTS", "FW_ACCESS_TIMEOUT", "MAX_FW_TIMEOUT", "REQUIRE_SOURCE",
    "REQUIRE_SOURCE_ADDRESS", "REQUIRE_USERNAME", "ACCESS_EXPIRE", "ACCESS_EXPIRE_EPOCH",
    "ENCRYPTION_MODE", "%include", "%include_keys", "GPG_EXE", "FOO", "#", ";", "", " ",
    "source", "KEY:",
]  # fmt: skip
RC_WORDS = [
    "[default]", "[s]", "[other]", "SPA_SERVER", "ACCESS", "ALLOW_IP", "KEY", "KEY_BASE64",
    "HMAC_KEY", "HMAC_KEY_BASE64", "HMAC_DIGEST_TYPE", "DIGEST_TYPE", "SPA_SERVER_PORT",
    "SPA_SERVER_PROTO", "FW_TIMEOUT", "SPOOF_USER", "USE_HMAC", "ENCRYPTION_MODE",
    "NO_SAVE_ARGS", "VERBOSE", "USE_GPG", "KEY_FILE", "FOO", "#", ";", "", " ", "key",
]  # fmt: skip
SAMPLES = ["ANY", "192.0.2.0/24", "::1", "tcp/22, udp/53", "Y", "N", "30", "0", "SHA512",
           "07/01/2030", "1924991999", "CBC", KEY_B64, HMAC_B64, "source", "resolve",
           "__CHANGEME__", "abcdef", "x" * 200]  # fmt: skip
VALUES = st.one_of(st.text(max_size=40), st.sampled_from(SAMPLES))


def structured(words: list[str]) -> st.SearchStrategy[str]:
    line = st.tuples(st.sampled_from(words), st.sampled_from([" ", "\t", ": ", ""]), VALUES)
    return st.lists(line, max_size=12).map(lambda ls: "".join(f"{w}{sep}{v}\n" for w, sep, v in ls))


def read_either(path: Path, reader: Callable[[Path], object]) -> str | None:
    """None when read; the error's text when refused; any other exception escapes."""
    try:
        reader(path)
    except ConfigError as exc:
        text = str(exc)
        assert text and "\n" not in text
        return text
    return None


@FUZZ
@given(data=st.binary(max_size=400))
def test_any_bytes_as_access_conf_only_raise_config_error(tmp_path: Path, data: bytes) -> None:
    read_either(write(tmp_path / "fuzz.conf", data), read_access_file)


@FUZZ
@given(text=structured(ACCESS_WORDS))
def test_any_text_as_access_conf_only_raises_config_error(tmp_path: Path, text: str) -> None:
    read_either(write(tmp_path / "fuzz.conf", text), read_access_file)


@FUZZ
@given(data=st.binary(max_size=400), stanza=st.text(max_size=10))
def test_any_bytes_as_fwknoprc_only_raise_config_error(
    tmp_path: Path, data: bytes, stanza: str
) -> None:
    read_either(write(tmp_path / "fuzzrc", data), lambda p: read_fwknoprc(p, stanza))


@FUZZ
@given(text=structured(RC_WORDS), stanza=st.sampled_from(["s", "default", "S", "other", "x"]))
def test_any_text_as_fwknoprc_only_raises_config_error(
    tmp_path: Path, text: str, stanza: str
) -> None:
    read_either(write(tmp_path / "fuzzrc", text), lambda p: read_fwknoprc(p, stanza))


MARK = "Zq9SecretMark"
SECRETS = st.text(max_size=30).map(lambda t: MARK + t)


@FUZZ
@given(
    before=structured(ACCESS_WORDS),
    var=st.sampled_from(["KEY", "KEY_BASE64", "HMAC_KEY", "HMAC_KEY_BASE64"]),
    secret=SECRETS,
    after=structured(ACCESS_WORDS),
)
def test_no_access_conf_error_shows_a_key(
    tmp_path: Path, before: str, var: str, secret: str, after: str
) -> None:
    secret = secret.split("\n")[0].split("\r")[0]
    text = f"{before}SOURCE ANY\n{var} {secret}\n{after}"
    message = read_either(write(tmp_path / "fuzz.conf", text), read_access_file)
    assert message is None or MARK not in message


@FUZZ
@given(
    var=st.sampled_from(["KEY", "KEY_BASE64", "HMAC_KEY", "HMAC_KEY_BASE64"]),
    secret=SECRETS,
    after=structured(RC_WORDS),
)
def test_no_fwknoprc_error_shows_a_key(tmp_path: Path, var: str, secret: str, after: str) -> None:
    secret = secret.split("\n")[0].split("\r")[0]
    text = f"[s]\n{var} {secret}\n{after}"
    message = read_either(write(tmp_path / "fuzzrc", text), lambda p: read_fwknoprc(p, "s"))
    assert message is None or MARK not in message


# ----------------------------------------------------------------- round trip

NETWORKS = st.one_of(
    st.builds(lambda a, p: ipaddress.ip_network(f"{a}/{p}", strict=False),
              st.ip_addresses(v=4), st.integers(1, 32)),
    st.builds(lambda a, p: ipaddress.ip_network(f"{a}/{p}", strict=False),
              st.ip_addresses(v=6), st.integers(1, 128)),
)  # fmt: skip
PORTS = st.lists(st.tuples(st.sampled_from(["tcp", "udp"]), st.integers(1, 65535)), max_size=4)
PASSPHRASE = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters=";"),
    min_size=1, max_size=32,
).filter(lambda t: t == t.strip(" \t\v\f") and len(t.encode()) <= 32
         and t.lower() != "__changeme__")  # fmt: skip


@st.composite
def stanzas(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """An access.conf stanza as text, and the fields it must read back as."""
    any_source = draw(st.booleans())
    nets = [] if any_source else draw(st.lists(NETWORKS, min_size=1, max_size=4))
    if draw(st.booleans()):
        phrase = draw(PASSPHRASE)
        key, key_line = phrase.encode(), f"KEY {phrase}"
    else:
        key = draw(st.binary(min_size=1, max_size=32))
        key_line = f"KEY_BASE64 {base64.b64encode(key).decode()}"
    hmac_key = draw(st.binary(min_size=1, max_size=128))
    assume(key != hmac_key)
    fields: dict[str, Any] = {
        "sources": recognizer.ANY if any_source else tuple(nets),
        "keys": spa.SpaKeys(key, hmac_key, draw(st.sampled_from(sorted(spa.HASHES)))),
        "open_ports": tuple(draw(PORTS)), "restrict_ports": tuple(draw(PORTS)),
        "fw_access_timeout": draw(st.integers(1, 2 << 22)),
        "max_fw_timeout": draw(st.integers(1, 2 << 22)),
        "require_source_address": draw(st.booleans()),
        "require_username": draw(st.sampled_from(["", "root", "alice", "a.b-c_d"])),
        "access_expire": draw(st.one_of(st.none(), st.integers(1, 2**40))),
    }  # fmt: skip
    source = draw(st.sampled_from(["ANY", "any"])) if any_source else ", ".join(map(str, nets))
    lines = [
        f"SOURCE {source}", key_line,
        f"HMAC_KEY_BASE64 {base64.b64encode(hmac_key).decode()}",
        f"HMAC_DIGEST_TYPE {fields['keys'].hmac_digest.upper()}",
        f"FW_ACCESS_TIMEOUT {fields['fw_access_timeout']}",
        f"MAX_FW_TIMEOUT {fields['max_fw_timeout']}",
        f"REQUIRE_SOURCE_ADDRESS {'Y' if fields['require_source_address'] else 'N'}",
    ]  # fmt: skip
    for var, name in (("OPEN_PORTS", "open_ports"), ("RESTRICT_PORTS", "restrict_ports")):
        if fields[name]:
            lines.append(f"{var} " + ", ".join(f"{p}/{n}" for p, n in fields[name]))
    if fields["require_username"]:
        lines.append(f"REQUIRE_USERNAME {fields['require_username']}")
    if fields["access_expire"] is not None:
        lines.append(f"ACCESS_EXPIRE_EPOCH {fields['access_expire']}")
    order = draw(st.permutations(lines[1:]))  # any order after SOURCE
    return "\n".join([lines[0], *order]) + "\n", fields


@FUZZ
@given(drafts=st.lists(stanzas(), min_size=1, max_size=3))
def test_rendered_stanzas_read_back_the_same(
    tmp_path: Path, drafts: list[tuple[str, dict[str, Any]]]
) -> None:
    path = write(tmp_path / "round.conf", "\n# next\n".join(text for text, _ in drafts))
    got = read_access_file(path)
    assert len(got) == len(drafts)
    for read, (_, fields) in zip(got, drafts, strict=True):
        keys = fields.pop("keys")
        assert (read.keys.key, read.keys.hmac_key) == (keys.key, keys.hmac_key)
        assert read.keys.hmac_digest == keys.hmac_digest
        for name, value in fields.items():
            assert getattr(read, name) == value, name


# ============================================================ the real fwknop

needs_fwknopd = pytest.mark.skipif(FWKNOPD is None, reason="fwknopd (fwknop-server) not installed")
needs_fwknop = pytest.mark.skipif(FWKNOP is None, reason="fwknop (fwknop-client) not installed")


def fwknopd(tmp_path: Path, access: Path) -> subprocess.CompletedProcess[str]:
    """fwknopd --dump-config: it parses access.conf, prints it and exits (no pid file,
    no firewall); run in the access file's folder, so relative includes name the same
    files as here."""
    assert FWKNOPD is not None
    conf = write(tmp_path / "fwknopd.conf", "")
    cmd = [FWKNOPD, "-c", str(conf), "-a", str(access), "-r", str(tmp_path / "run"),
           "--dump-config", "-f"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False,
                          cwd=access.parent, stdin=subprocess.DEVNULL)  # fmt: skip


def dumped(stdout: str) -> list[dict[str, str]]:
    """fwknopd's dump of its access stanzas: one dict per stanza, as printed."""
    out: list[dict[str, str]] = []
    for line in stdout.split("Current fwknopd access settings:")[1].splitlines():
        if m := re.fullmatch(r"SOURCE \(\d+\):\s+(.*)", line):
            out.append({"SOURCE": m.group(1)})
        elif (m := re.fullmatch(r"\s*([A-Z_]+):\s+(.*)", line)) and out:
            out[-1][m.group(1)] = m.group(2)
    return out


def fwknopd_view(s: recognizer.Stanza) -> dict[str, str]:
    """What fwknopd's dump must say of a stanza read here."""
    ports = {f"{p}/{n}" for p, n in s.open_ports}, {f"{p}/{n}" for p, n in s.restrict_ports}
    expire = (
        "<not set>" if s.access_expire is None else time.asctime(time.localtime(s.access_expire))
    )
    return {"KEY_LEN": str(len(s.keys.key)), "HMAC_KEY_LEN": str(len(s.keys.hmac_key)),
            "HMAC_DIGEST_TYPE": str(HASH_NUMBERS[s.keys.hmac_digest]),
            "FW_ACCESS_TIMEOUT": str(s.fw_access_timeout), "MAX_FW_TIMEOUT": str(s.max_fw_timeout),
            "REQUIRE_SOURCE_ADDRESS": "Yes" if s.require_source_address else "No",
            "REQUIRE_USERNAME": s.require_username or "<not set>", "ACCESS_EXPIRE": expire,
            "OPEN_PORTS": str(sorted(ports[0])),
            "RESTRICT_PORTS": str(sorted(ports[1]))}  # fmt: skip


def port_set(raw: str) -> str:
    return str(sorted(p.strip().lower() for p in raw.split(",") if p.strip()))


@needs_fwknopd
@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin"])
def test_fwknopd_reads_the_same_stanzas(
    tmp_path: Path, tz: Callable[[str], None], zone: str
) -> None:
    tz(zone)  # fwknopd inherits TZ: its mktime() and ours see the same zone
    write(
        tmp_path / "keys.conf",
        "KEY     pass phrase with spaces\nHMAC_KEY_BASE64 " + HMAC_B64 + "\n",
    )
    write(tmp_path / "inc.conf", f"SOURCE 10.0.0.0/8\n{KEYS}RESTRICT_PORTS udp/53\n")
    write(tmp_path / "access.d" / "z.conf", f"SOURCE 198.51.100.0/255.255.255.0\n{KEYS}")
    write(tmp_path / "access.d" / "notes.txt", "not read\n")
    access = write(
        tmp_path / "access.conf",
        f"""\
# fwknopd 2.6.10 and aioknock read this alike
SOURCE              ANY
{KEYS}OPEN_PORTS          tcp/22, UDP/53
HMAC_DIGEST_TYPE    SHA512
FW_ACCESS_TIMEOUT   0
MAX_FW_TIMEOUT      600
REQUIRE_SOURCE      y
REQUIRE_USERNAME    alice
ACCESS_EXPIRE       07/01/2030
%include inc.conf
ENCRYPTION_MODE     CBC

SOURCE: 192.0.2.0/24, 192.0.2.77/32
KEY                 a passphrase;not this
HMAC_KEY            another one
ACCESS_EXPIRE_EPOCH 1924991999
FW_ACCESS_TIMEOUT   45

SOURCE 203.0.113.9
%include_keys keys.conf
REQUIRE_SOURCE_ADDRESS Yes
ACCESS_EXPIRE       12/31/29
%include_folder access.d
""",
    )
    result = fwknopd(tmp_path, access)
    assert result.returncode == 0, result.stderr
    theirs, ours = dumped(result.stdout), read_access_file(access)
    lines = access.read_text().split("\n")
    assert [s["SOURCE"] for s in theirs] == [_source_text(s.where, lines, tmp_path) for s in ours]
    for their, our in zip(theirs, ours, strict=True):
        their["OPEN_PORTS"] = port_set(their["OPEN_PORTS"].replace("<not set>", ""))
        their["RESTRICT_PORTS"] = port_set(their["RESTRICT_PORTS"].replace("<not set>", ""))
        view = fwknopd_view(our)
        assert {k: their[k] for k in view} == view, our.where


def _source_text(where: str, lines: list[str], folder: Path) -> str:
    """The value of the SOURCE line at ``where``, as fwknopd prints it."""
    file, _, number = where.rpartition(":")
    text = lines if Path(file).name == "access.conf" else Path(file).read_text().split("\n")
    return text[int(number) - 1].split(None, 1)[1]


@needs_fwknopd
@pytest.mark.parametrize(
    "text",
    [
        "",  # no stanza
        "SOURCE ANY\nKEY __CHANGEME__\nHMAC_KEY abc\n",
        f"SOURCE ANY\nKEY_BASE64 abc$\nHMAC_KEY_BASE64 {HMAC_B64}\n",
        "SOURCE ANY\nKEY same\nHMAC_KEY same\n",
        f"{GOOD}HMAC_DIGEST_TYPE sha224\n",
        f"{GOOD}ENCRYPTION_MODE bogus\n",
        f"SOURCE 0.0.0.0/0\n{KEYS}",
        f"SOURCE 192.0.2.0/33\n{KEYS}",
        f"{GOOD}   \n",
        f"{GOOD}OPEN_PORTS icmp/1\n",
        f"{GOOD}FW_ACCESS_TIMEOUT -1\n",
        f"{GOOD}KEY\n",
        f"{GOOD}%include missing.conf\n",
        "SOURCE ANY\nKEY abcdef\nHMAC_KEY ghij\nSOURCE ANY\nGPG_DECRYPT_PW __CHANGEME__\n",
    ],
)
def test_fwknopd_refuses_these_too(tmp_path: Path, text: str) -> None:
    access = write(tmp_path / "access.conf", text)
    assert fwknopd(tmp_path, access).returncode != 0
    with pytest.raises(ConfigError):
        read_access_file(access)


def fwknop(
    tmp_path: Path, rcfile: Path, stanza: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """fwknop --test: builds the packet from the rc file, prints it, sends nothing."""
    assert FWKNOP is not None
    cmd = [FWKNOP, "--rc-file", str(rcfile), "-n", stanza, "--test", "-v", "--no-save-args", *args]
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False, env=env,
                          cwd=tmp_path, stdin=subprocess.DEVNULL)  # fmt: skip


def key_of(values: dict[str, Any], name: str) -> bytes:
    """A key from a layer's raw text, as the settings read it: base64 first."""
    coded = values.get(f"{name}_base64")
    return base64.b64decode(coded) if coded else str(values[name]).encode()


def reported(stdout: str) -> dict[str, str]:
    """fwknop -v's "Name: value" lines; the first of each (the packet as sent, with its
    HMAC; the decoded dump after it repeats the fields)."""
    fields: dict[str, str] = {}
    for m in re.finditer(r"^\s*([\w /]+): (.*)$", stdout, re.M):
        fields.setdefault(m.group(1).strip(), m.group(2))
    return fields


@needs_fwknop
@pytest.mark.parametrize(
    ("default", "named"),
    [
        ("DIGEST_TYPE SHA512\nHMAC_DIGEST_TYPE sha384\nUSE_HMAC Y\n",
         f"ALLOW_IP 198.18.0.2\nKEY_BASE64 {KEY_B64}\nHMAC_KEY_BASE64 {HMAC_B64}\n"),
        ("KEY pass-phrase\nHMAC_KEY other#comment\nSPA_SERVER_PORT 40001\n",
         "ALLOW_IP source\nACCESS udp/53\nFW_TIMEOUT 0\nDIGEST_TYPE md5\n"),
    ],
)  # fmt: skip
def test_fwknop_reads_the_same_rc_file(tmp_path: Path, default: str, named: str) -> None:
    text = (f"[default]\nSPA_SERVER 198.18.0.1\nACCESS tcp/22,udp/53\nFW_TIMEOUT 45\n{default}"
            f"[other]\nUSE_GPG Y\n[s]\nSPOOF_USER bob\nSPA_SERVER_PROTO udp\n{named}")  # fmt: skip
    path = rc(tmp_path, text)
    result = fwknop(tmp_path, path, "s")
    assert result.returncode == 0, result.stderr
    said, values = reported(result.stdout), read_fwknoprc(path, "s").values
    allow = "0.0.0.0" if values["allow_ip"] == "source" else values["allow_ip"]
    assert said["Message String"] == f"{allow},{values['access']}"
    assert said["Client Timeout"] == values["client_timeout"]
    assert said["Username"] == values["spoof_user"]
    assert said["Digest Type"].endswith(f"({values.get('digest_type', 'sha256').upper()})")
    assert said["HMAC Type"].endswith(f"({values.get('hmac_digest_type', 'sha256').upper()})")
    assert said["destination port"] == values.get("spa_server_port", "62201")
    assert (said["IP/host"], said["protocol"]) == (values["remote"], values["spa_server_proto"])
    keys = spa.SpaKeys(key_of(values, "key"), key_of(values, "hmac_key"),
                         values.get("hmac_digest_type", "sha256"))  # fmt: skip
    msg = spa.decode_message(spa.unseal(said["Final SPA Data"].encode(), keys))
    assert (msg.allow, msg.username) == (allow, values["spoof_user"])
    assert ",".join(f"{p}/{n}" for p, n in msg.access) == values["access"]
    assert msg.client_timeout == int(values["client_timeout"])


@needs_fwknop
@pytest.mark.parametrize(
    ("text", "stanza"),
    [
        ("[s]\nCLIENT_TIMEOUT 60\n", "s"),  # in the template fwknop writes, yet refused
        ("[s]\nSPA_SERVER\n", "s"),
        ("[s]\n \n", "s"),
        ("[s]\nENCRYPTION_MODE bogus\n", "s"),
        ("[default]\n[s]\n", "nosuch"),
    ],
)
def test_fwknop_refuses_these_too(tmp_path: Path, text: str, stanza: str) -> None:
    keys = f"[default]\nSPA_SERVER 198.18.0.1\nACCESS tcp/22\nALLOW_IP 198.18.0.2\n{KEYS}"
    path = rc(tmp_path, keys + text)
    assert fwknop(tmp_path, path, stanza).returncode != 0
    with pytest.raises(ConfigError):
        read_fwknoprc(path, stanza)


@needs_fwknop
def test_a_key_gen_pair_in_both_files_opens_the_door(tmp_path: Path) -> None:
    """fwknop --key-gen's pair in access.conf and .fwknoprc: the packet fwknop builds
    from the rc file verifies with the stanza read here, and asks for allowed ports."""
    assert FWKNOP is not None
    out = subprocess.run([FWKNOP, "--key-gen"], capture_output=True, text=True, timeout=30,
                         check=True, stdin=subprocess.DEVNULL).stdout  # fmt: skip
    pair = dict(re.findall(r"^(KEY_BASE64|HMAC_KEY_BASE64): (\S+)$", out, re.M))
    lines = "".join(f"{var} {value}\n" for var, value in pair.items())
    access = write(tmp_path / "access.conf", f"SOURCE ANY\n{lines}OPEN_PORTS tcp/22\n")
    path = rc(tmp_path, f"[s]\nSPA_SERVER 198.18.0.1\nACCESS tcp/22\nALLOW_IP 198.18.0.2\n{lines}")
    (only,) = read_access_file(access)
    result = fwknop(tmp_path, path, "s")
    assert result.returncode == 0, result.stderr
    packet = reported(result.stdout)["Final SPA Data"].encode()
    msg = spa.decode_message(spa.unseal(packet, only.keys))
    assert msg.allow == "198.18.0.2" and only.denied(msg.access) == ""
    assert read_fwknoprc(path, "s").values["key_base64"] == pair["KEY_BASE64"]
