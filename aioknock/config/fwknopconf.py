"""fwknop's own files, read for aioknock: fwknopd's ``access.conf`` and the client's
``~/.fwknoprc``, as fwknop 2.6.10 reads them (``server/access.c``, ``client/config_init.c``).

Both are read line by line as fwknop does: a line whose first character is ``#``, ``;``
or a line end is skipped; otherwise the first word is the variable (a final ``:``
dropped; names are case-sensitive) and the value follows it.

access.conf: the value runs to the first ``;`` or line end, trailing spaces included.
Each SOURCE line starts a stanza, which lasts to the next SOURCE line of the same file.
``%include FILE`` and ``%include_folder DIR`` (the files there whose last extension
starts with ``.conf``, in name order here) add the stanzas of other files, at most three
files deep; the stanza open before them goes on after them. ``%include_keys FILE``
reads the open stanza's keys from FILE. Relative names are relative to the file that
names them (fwknopd opens them relative to its working directory).

.fwknoprc: ``[name]`` lines start stanzas, matched without regard to case; the value is
one word (it ends at a space, tab, ``#`` or ``;``). ``[default]`` applies to every
stanza and the named stanza overrides it; other stanzas are not read.

fwknop skips, ignores or only warns about much; aioknock refuses it instead, with one
``ConfigError`` line naming the file, the line and the variable, so that nothing in
these files is silently lost: a variable it does not implement (GnuPG, commands, NAT,
...) or that fwknop does not know; in access.conf a variable before the first SOURCE
line, one set twice in a stanza, a stanza without an encryption key or an HMAC key
(aioknock authenticates every packet), ``__CHANGEME__`` keys, keys fwknop could not use
(over 32 or 128 bytes, the two alike); a value its variable does not take; a line that
fwknop reads otherwise than it looks (text after an rc value, a key ending in spaces, a
line over fwknop's 1,023-byte buffer). No error shows a key.
"""

from __future__ import annotations

import base64
import calendar
import ipaddress
import os
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..codec import spa
from ..daemon import fwknopd
from ..errors import ConfigError, InvalidValue, KnockError, shown
from .files import Layer
from .regular import MAX_CONFIG, read_regular

__all__ = ["read_access_file", "read_fwknoprc"]

MAX_LINE = 1023  # bytes: fwknop reads a line with fgets into 1,024; a longer one splits
MAX_DEPTH = 3  # fwknopd's MAX_DEPTH: access.conf and two levels of %include
MAX_ACCESS_TIMEOUT = 2 << 22  # fwknopd's RCHK_MAX_FW_TIMEOUT
_SPACE = " \t\n\v\f\r"  # C's isspace: what sscanf's %s stops at
_BLANK = " \t\v\f"  # what may trail a value before its line end
_WORD = re.compile(r"[ \t\n\v\f\r]*([^ \t\n\v\f\r]+)")
# sscanf("%s %[^;\n\r]"): the word, spaces, then a value that starts after them
_ACCESS_LINE = re.compile(r"[ \t\n\v\f\r]*[^ \t\n\v\f\r]+[ \t\n\v\f\r]+([^;\r \t\n\v\f][^;\r]*)")
# sscanf("%s %[^ ;\t\n\r#]"), and what follows the value
_RC_LINE = re.compile(
    r"[ \t\n\v\f\r]*[^ \t\n\v\f\r]+[ \t\n\v\f\r]+([^ ;\t\n\r#\v\f][^ ;\t\n\r#]*)(.*)"
)
_SECTION = re.compile(r"[ \t\n\v\f\r]*\[([^\]]*)\](.*)")
_NAME = re.compile(r"%?[A-Z][A-Z0-9_]*")  # a variable name that may be shown
_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_CHANGEME = "__changeme__"
_YES_NO = {"y": True, "yes": True, "n": False, "no": False}
_DATE = re.compile(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4}|[0-9]{2})")

Read = Callable[[str], Any]


# ------------------------------------------------------------------------- lines


def _lines(path: Path, at: tuple[str, int, str] | None = None) -> list[str]:
    """The file's lines, each one fwknop reads as it looks: UTF-8, no NUL, at most
    MAX_LINE bytes. ``at`` (file, line, directive): what names the file, which an error
    opening it then names."""
    source, line, key = at if at else (str(path), None, None)
    what = f"cannot read {shown(str(path), 200)}" if at else "cannot read file"
    try:
        data = read_regular(path, MAX_CONFIG)
    except OSError as exc:
        raise ConfigError(f"{what}: {exc.strerror or exc}", source=source, line=line,
                          key=key) from None  # fmt: skip
    except ValueError:  # a NUL in the name, or one the file system cannot encode
        raise ConfigError(f"{what}: not a usable file name", source=source, line=line,
                          key=key) from None  # fmt: skip
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[: exc.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", source=str(path), line=bad) from None
    lines = text.split("\n")  # fgets splits at LF only
    if lines[-1] == "":
        lines.pop()
    for number, line_text in enumerate(lines, 1):
        _check_line(str(path), number, line_text)
    return lines


def _check_line(source: str, number: int, text: str) -> None:
    if "\0" in text:
        raise ConfigError("holds a NUL byte (a binary file?)", source=source, line=number)
    size = len(text.encode())
    if size > MAX_LINE:
        raise ConfigError(f"{size:,} bytes, longer than fwknop's {MAX_LINE:,}-byte line "
                          "buffer: it would read the rest as another line",
                          source=source, line=number)  # fmt: skip


def _skipped(text: str) -> bool:
    """fwknop's IS_EMPTY_LINE: only the first character counts."""
    return not text or text[0] in "#;\r"


def _variable(text: str) -> str:
    """The first word, without what follows its last ':' (fwknop drops a final colon)."""
    word = _WORD.match(text)
    assert word is not None  # the caller saw a non-space character
    name = word.group(1)
    return name[: name.rfind(":")] if ":" in name else name


def _refuse(var: str, has_value: bool, known: Collection[str], program: str,
            place: dict[str, Any]) -> ConfigError:  # fmt: skip
    """The error for a variable that is neither read nor refused by name: shown only
    when it looks like a variable name (a lone word may be a passphrase)."""
    if var[:1] in ("#", ";"):
        return ConfigError(f"a comment must start in the first column ({program} reads an "
                           "indented '#' as a variable name)", **place)  # fmt: skip
    if var.upper() in known:
        return ConfigError(f"unknown variable; {program}'s names are upper case: {var.upper()}",
                           **place)  # fmt: skip
    if has_value and _NAME.fullmatch(var):
        return ConfigError(f"unknown variable ({program} does not read it)", key=var, **place)
    return ConfigError("not 'VARIABLE value' with a known upper-case VARIABLE "
                       "(the line is not shown: it may be a secret)", **place)  # fmt: skip


def _only_spaces(place: dict[str, Any], program: str) -> ConfigError:
    return ConfigError(f"a line of only spaces or tabs, which {program} refuses; make it empty",
                       **place)  # fmt: skip


# ---------------------------------------------------------------- access.conf values


_SOURCE_HELP = ("expected ANY or addresses and networks separated by commas, such as "
                "192.0.2.0/24, 198.51.100.7, 2001:db8::/32")  # fmt: skip
_PORTS_HELP = "expected tcp/PORT or udp/PORT separated by commas, such as tcp/22, udp/53"


def _sources(value: str) -> tuple[fwknopd.Network, ...]:
    """SOURCE: ANY (every IPv4 and IPv6 address) or a list; IPv6 is aioknock's addition."""
    networks: list[fwknopd.Network] = []
    for item in value.split(","):
        item = item.strip(_SPACE)
        if item.upper() == "ANY":
            networks += fwknopd.ANY
        else:
            networks.append(_network(item))
    return tuple(networks)


def _network(item: str) -> fwknopd.Network:
    """An address, or a network as fwknopd takes one: host bits may be set, the mask a
    prefix length or dotted; /0 is refused (fwknopd's mask is 1-32: ANY says it)."""
    if not item:
        raise InvalidValue(f"an empty entry; {_SOURCE_HELP}")
    address, slash, mask = item.partition("/")
    try:
        ip = ipaddress.ip_address(address.replace("%", "?"))  # no IPv6 scope (fe80::1%eth0)
    except ValueError:
        raise InvalidValue(f"'{shown(address)}' is not an IP address; {_SOURCE_HELP}") from None
    if not slash:
        return ipaddress.ip_network(ip)
    if mask.isascii() and mask.isdigit() and int(mask) == 0:
        raise InvalidValue(f"'{shown(item)}': a /0 network, which fwknopd refuses; write ANY")
    try:
        return ipaddress.ip_network(f"{ip}/{mask}", strict=False)
    except ValueError:
        raise InvalidValue(f"'{shown(mask)}' is not a network mask for {ip}; "
                           f"{_SOURCE_HELP}") from None  # fmt: skip


def _ports(value: str) -> tuple[tuple[str, int], ...]:
    """OPEN_PORTS, RESTRICT_PORTS: ``tcp/22, udp/53``; the protocol in any case."""
    ports: list[tuple[str, int]] = []
    for item in value.split(","):
        proto, _, port = item.strip(_SPACE).partition("/")
        proto = proto.lower()
        if proto not in ("tcp", "udp"):
            what = f"'{shown(item.strip(_SPACE))}'" if item.strip(_SPACE) else "an empty entry"
            raise InvalidValue(f"{what}: the protocol must be tcp or udp; {_PORTS_HELP}")
        if not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
            raise InvalidValue(f"'{shown(item.strip(_SPACE))}': the port must be 1-65535; "
                               f"{_PORTS_HELP}")  # fmt: skip
        ports.append((proto, int(port)))
    return tuple(ports)


def _not_placeholder(text: str) -> None:
    if text.lower() == _CHANGEME:
        raise InvalidValue("still __CHANGEME__: put a key here (fwknop --key-gen writes a pair)")


def _sized(data: bytes, limit: int, what: str) -> bytes:
    if not data:
        raise InvalidValue("decodes to no bytes")
    if len(data) > limit:
        raise InvalidValue(f"{len(data)} bytes; fwknop's {what} is at most {limit} bytes "
                           "(fwknopd would load it, then accept no packet)")  # fmt: skip
    return data


def _passphrase(limit: int, what: str) -> Read:
    """KEY, HMAC_KEY: the value's bytes, as fwknopd takes them."""

    def read(value: str) -> bytes:
        _not_placeholder(value)
        if value != value.rstrip(_BLANK):
            raise InvalidValue("ends in spaces or tabs, which fwknopd keeps as part of the key "
                               "(an rc file's key cannot hold them); remove them")  # fmt: skip
        return _sized(value.encode(), limit, what)

    return read


def _base64(limit: int, what: str) -> Read:
    """KEY_BASE64, HMAC_KEY_BASE64, as fwknop --key-gen writes them; where fwknopd's
    decoder would drop characters (after an '=', a lone last one) it is refused."""

    def read(value: str) -> bytes:
        text = value.rstrip(_BLANK)
        _not_placeholder(text)
        if not set(text) <= _B64_CHARS:
            raise InvalidValue("not base64 (as fwknop --key-gen writes it): only A-Z, a-z, "
                               "0-9, '+', '/' and a final '=' may appear")  # fmt: skip
        body = text.rstrip("=")
        if "=" in body:
            raise InvalidValue("not base64: '=' may only end it (fwknopd ignores what follows)")
        if len(body) % 4 == 1:
            raise InvalidValue("not base64: one character too many or too few")
        return _sized(base64.b64decode(body + "=" * (-len(body) % 4)), limit, what)

    return read


def _digest(value: str) -> str:
    """HMAC_DIGEST_TYPE: SHA256, ... in any case; the codec's lower-case name."""
    name = value.rstrip(_BLANK).lower()
    if name not in spa.HASHES:
        names = ", ".join(n.upper() for n in spa.HASHES)
        raise InvalidValue(f"expected one of {names}, got '{shown(value)}'")
    return name


def _timeout(default: int) -> Read:
    """FW_ACCESS_TIMEOUT, MAX_FW_TIMEOUT: seconds; 0 is fwknopd's default."""

    def read(value: str) -> int:
        text = value.rstrip(_BLANK)
        if not (text.isascii() and text.isdigit() and int(text) <= MAX_ACCESS_TIMEOUT):
            raise InvalidValue(f"expected whole seconds 0-{MAX_ACCESS_TIMEOUT} (0: the default, "
                               f"{default}), got '{shown(value)}'")  # fmt: skip
        return int(text) or default

    return read


def _yes_no(value: str) -> bool:
    """Y or N (Yes, No; any case): fwknopd reads any value not starting with Y as N."""
    word = value.rstrip(_BLANK).lower()
    if word not in _YES_NO:
        raise InvalidValue(f"expected Y or N, got '{shown(value)}' (fwknopd would read it as "
                           f"{'Y' if word.startswith('y') else 'N'})")  # fmt: skip
    return _YES_NO[word]


def _username(value: str) -> str:
    """REQUIRE_USERNAME: a name a packet can carry, compared as written."""
    if value != value.rstrip(_BLANK):
        raise InvalidValue("ends in spaces or tabs, which fwknopd keeps (no packet's user "
                           "would match); remove them")  # fmt: skip
    try:
        spa.check_user(value)
    except KnockError as exc:
        raise InvalidValue(f"{exc.reason}, so no packet could carry it") from None
    return value


def _expire_date(value: str) -> float:
    """ACCESS_EXPIRE: midnight of MM/DD/YYYY as fwknopd's mktime() sees it: local time,
    told it is not summer time (tm_isdst 0), so an hour later in summer; YY is 20YY."""
    text = value.rstrip(_BLANK)
    if (m := _DATE.fullmatch(text)) is None:
        raise InvalidValue(f"expected MM/DD/YYYY such as 12/31/2030, got '{shown(value)}'")
    month, day, year = (int(g) for g in m.groups())
    year += 2000 if len(m.group(3)) == 2 else 0
    if not (1 <= month <= 12 and year >= 1970 and 1 <= day <= calendar.monthrange(year, month)[1]):
        raise InvalidValue(f"no such date (MM/DD/YYYY from 1970): '{shown(value)}'")
    return time.mktime((year, month, day, 0, 0, 0, 0, 0, 0))


def _expire_epoch(value: str) -> float | None:
    """ACCESS_EXPIRE_EPOCH: seconds since 1970; 0 is "not set", as in fwknopd."""
    text = value.rstrip(_BLANK)
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) < 2**63):
        raise InvalidValue(f"expected seconds since 1970 such as 1924991999, got '{shown(value)}'")
    return float(text) if int(text) else None


def _cbc(value: str) -> str:
    """ENCRYPTION_MODE: CBC, the only one aioknock implements (fwknop's default)."""
    mode = value.rstrip(_BLANK)
    if mode.lower() != "cbc":
        raise InvalidValue(f"only CBC is implemented by aioknock, got '{shown(mode)}'")
    return "cbc"


# Variable -> (the Stanza field it sets, how its value is read). Variables sharing a
# field are alternatives: setting both in one stanza is refused.
_ACCESS: dict[str, tuple[str, Read]] = {
    "OPEN_PORTS": ("open_ports", _ports),
    "RESTRICT_PORTS": ("restrict_ports", _ports),
    "KEY": ("key", _passphrase(spa.MAX_KEY, "encryption key")),
    "KEY_BASE64": ("key", _base64(spa.MAX_KEY, "encryption key")),
    "HMAC_KEY": ("hmac_key", _passphrase(spa.MAX_HMAC_KEY, "HMAC key")),
    "HMAC_KEY_BASE64": ("hmac_key", _base64(spa.MAX_HMAC_KEY, "HMAC key")),
    "HMAC_DIGEST_TYPE": ("hmac_digest", _digest),
    "FW_ACCESS_TIMEOUT": ("fw_access_timeout", _timeout(fwknopd.DEFAULT_ACCESS_TIMEOUT)),
    "MAX_FW_TIMEOUT": ("max_fw_timeout", _timeout(fwknopd.DEFAULT_MAX_TIMEOUT)),
    "REQUIRE_SOURCE_ADDRESS": ("require_source_address", _yes_no),
    "REQUIRE_SOURCE": ("require_source_address", _yes_no),  # fwknopd's older name
    "REQUIRE_USERNAME": ("require_username", _username),
    "ACCESS_EXPIRE": ("access_expire", _expire_date),
    "ACCESS_EXPIRE_EPOCH": ("access_expire", _expire_epoch),
    "ENCRYPTION_MODE": ("encryption_mode", _cbc),
}
_KEYS_FILE = ("KEY", "KEY_BASE64", "HMAC_KEY", "HMAC_KEY_BASE64")  # what %include_keys reads
_DIRECTIVES = ("SOURCE", "%include", "%include_folder", "%include_keys")
_ACCESS_NOT_IMPLEMENTED = {
    **dict.fromkeys(
        ("GPG_HOME_DIR", "GPG_EXE", "GPG_DECRYPT_ID", "GPG_DECRYPT_PW", "GPG_ALLOW_NO_PW",
         "GPG_REQUIRE_SIG", "GPG_DISABLE_SIG", "GPG_IGNORE_SIG_VERIFY_ERROR", "GPG_REMOTE_ID",
         "GPG_FINGERPRINT_ID"),
        "GnuPG encryption; use KEY_BASE64 and HMAC_KEY_BASE64",
    ),
    **dict.fromkeys(
        ("ENABLE_CMD_EXEC", "ENABLE_CMD_SUDO_EXEC", "CMD_SUDO_EXEC_USER", "CMD_SUDO_EXEC_GROUP",
         "CMD_EXEC_USER", "CMD_EXEC_GROUP", "CMD_CYCLE_OPEN", "CMD_CYCLE_CLOSE",
         "CMD_CYCLE_TIMER"),
        "commands run for SPA packets",
    ),
    **dict.fromkeys(("FORCE_NAT", "FORCE_SNAT", "FORCE_MASQUERADE", "DISABLE_DNAT",
                     "FORWARD_ALL"), "NAT and forwarding"),
    "DESTINATION": "destination rules: a stanza matches every destination address",
}  # fmt: skip
_ACCESS_KNOWN = frozenset((*_ACCESS, *_DIRECTIVES, *_ACCESS_NOT_IMPLEMENTED))
_WHAT = {  # what variables sharing a Stanza field set
    "key": "the encryption key",
    "hmac_key": "the HMAC key",
    "require_source_address": "the source address requirement",
    "access_expire": "the expiry",
}


# ---------------------------------------------------------------- access.conf stanzas


@dataclass(slots=True)
class _Draft:
    """A stanza being read: its SOURCE line and each value set, with the variable that
    set it and where."""

    source: str
    line: int
    sources: tuple[fwknopd.Network, ...]
    values: dict[str, tuple[Any, str, str]] = field(default_factory=dict)
    stanza: fwknopd.Stanza | None = None


def _place(where: str) -> dict[str, Any]:
    source, _, line = where.rpartition(":")
    return {"source": source, "line": int(line)}


def _access_entry(source: str, number: int, text: str) -> tuple[str, str] | None:
    """(variable, value) of a line, None for a skipped one; the variable is checked."""
    if _skipped(text):
        return None
    place: dict[str, Any] = {"source": source, "line": number}
    if not text.strip(_SPACE):
        raise _only_spaces(place, "fwknopd")
    var = _variable(text)
    value = _ACCESS_LINE.match(text)
    if var in _ACCESS_NOT_IMPLEMENTED:
        why = _ACCESS_NOT_IMPLEMENTED[var]
        raise ConfigError(f"not implemented by aioknock ({why})", key=var, **place)
    if var not in _ACCESS_KNOWN:
        raise _refuse(var, value is not None, _ACCESS_KNOWN, "fwknopd", place)
    if value is None:
        raise ConfigError("has no value (a value cannot start with ';')", key=var, **place)
    return var, value.group(1)


def _set(draft: _Draft, var: str, raw: str, source: str, number: int) -> None:
    slot, read = _ACCESS[var]
    if (before := draft.values.get(slot)) is not None:
        _, by, at = before
        at_source, _, at_line = at.rpartition(":")
        at = f"line {at_line}" if at_source == source else at
        what = (
            "already set in this stanza" if by == var else f"{_WHAT[slot]} is already set by {by}"
        )
        raise ConfigError(f"{what} at {at}; keep one", source=source, line=number,
                          key=var)  # fmt: skip
    try:
        value = read(raw)
    except InvalidValue as exc:
        raise ConfigError(str(exc), source=source, line=number, key=var) from None
    draft.values[slot] = (value, var, f"{source}:{number}")


def _finish(draft: _Draft) -> None:
    """The stanza, once its keys are there and fwknopd would take them."""
    at: dict[str, Any] = {"source": draft.source, "line": draft.line, "key": "SOURCE"}
    if "key" not in draft.values:
        raise ConfigError("this stanza has no KEY or KEY_BASE64 (aioknock does not implement "
                          "GnuPG: every stanza needs one)", **at)  # fmt: skip
    if "hmac_key" not in draft.values:
        raise ConfigError("this stanza has no HMAC_KEY or HMAC_KEY_BASE64; aioknock requires "
                          "an HMAC key in every stanza (a packet without HMAC is not "
                          "authenticated)", **at)  # fmt: skip
    values = {slot: value for slot, (value, _, _) in draft.values.items()}
    if values["key"] == values["hmac_key"]:
        _, var, where = draft.values["hmac_key"]
        raise ConfigError("the same as the stanza's encryption key, which fwknopd refuses "
                          "(fwknop --key-gen writes a pair)", key=var, **_place(where))  # fmt: skip
    keys = spa.SpaKeys(values.pop("key"), values.pop("hmac_key"),
                         values.pop("hmac_digest", "sha256"))  # fmt: skip
    values.pop("encryption_mode", None)
    draft.stanza = fwknopd.Stanza(
        draft.sources, keys, where=f"{draft.source}:{draft.line}", **values
    )


class _AccessReader:
    """Reads access.conf and what it includes, in fwknopd's order."""

    def __init__(self) -> None:
        self.drafts: list[_Draft] = []  # in the order of their SOURCE lines, as fwknopd's list
        self.reading: list[str] = []  # real paths of the files open, the outermost first
        self.done: set[str] = set()

    def stanzas(self, path: Path) -> tuple[fwknopd.Stanza, ...]:
        self.file(path, None)
        if not self.drafts:
            raise ConfigError("no SOURCE line: fwknopd needs at least one stanza",
                              source=str(path))  # fmt: skip
        return tuple(d.stanza for d in self.drafts if d.stanza is not None)

    def file(self, path: Path, at: tuple[str, int, str] | None) -> None:
        lines = _lines(path, at)
        self.reading.append(_real(path, at))
        self.done.add(self.reading[-1])
        current: _Draft | None = None
        for number, text in enumerate(lines, 1):
            current = self.line(path, number, text, current)
        if current is not None:
            _finish(current)
        self.reading.pop()

    def line(self, path: Path, number: int, text: str, current: _Draft | None) -> _Draft | None:
        """Reads one line into ``current``; the stanza open after it."""
        entry = _access_entry(str(path), number, text)
        if entry is None:
            return current
        var, value = entry
        if var == "SOURCE":
            if current is not None:
                _finish(current)
            try:
                sources = _sources(value)
            except InvalidValue as exc:
                raise ConfigError(str(exc), source=str(path), line=number, key=var) from None
            self.drafts.append(_Draft(str(path), number, sources))
            return self.drafts[-1]
        if var in ("%include", "%include_folder"):
            self.include(var, _named_path(value, path), (str(path), number, var))
        elif current is None:
            raise ConfigError("before any SOURCE line (fwknopd skips it): a stanza starts "
                              "with SOURCE", source=str(path), line=number, key=var)  # fmt: skip
        elif var == "%include_keys":
            _keys_file(current, _named_path(value, path), (str(path), number, var))
        else:
            _set(current, var, value, str(path), number)
        return current

    def include(self, var: str, target: Path, at: tuple[str, int, str]) -> None:
        if len(self.reading) >= MAX_DEPTH:
            raise ConfigError(f"includes nested deeper than {MAX_DEPTH} files (fwknopd's limit)",
                              source=at[0], line=at[1], key=var)  # fmt: skip
        for file in [target] if var == "%include" else _folder(target, at):
            real = _real(file, at)
            if real in self.reading:
                chain = " -> ".join(shown(p, 100) for p in [*self.reading, real])
                raise ConfigError(f"include cycle: {chain}", source=at[0], line=at[1], key=var)
            if real in self.done:
                raise ConfigError(f"{shown(str(file), 200)} is already read (its stanzas would "
                                  "be there twice)", source=at[0], line=at[1],
                                  key=var)  # fmt: skip
            self.file(file, at)


def _named_path(value: str, path: Path) -> Path:
    """A file a directive names; relative to the file naming it."""
    name = Path(value.rstrip(_BLANK))
    return name if name.is_absolute() else path.parent / name


def _real(path: Path, at: tuple[str, int, str] | None) -> str:
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):  # a NUL in the name, a loop of links
        source, line, key = at if at else (str(path), None, None)
        raise ConfigError(f"'{shown(str(path))}' is not a usable file name", source=source,
                          line=line, key=key) from None  # fmt: skip


def _folder(folder: Path, at: tuple[str, int, str]) -> list[Path]:
    """%include_folder's files: those whose last extension starts with ``.conf``, as
    fwknopd's (so ``a.conf~`` too); in name order here, in readdir's order there."""
    try:
        names = sorted(os.listdir(folder))
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a usable name"
        raise ConfigError(f"cannot read folder {shown(str(folder), 200)}: {why}",
                          source=at[0], line=at[1], key=at[2]) from None  # fmt: skip
    return [folder / n for n in names if "." in n and n[n.rfind(".") :].startswith(".conf")]


def _keys_file(draft: _Draft, path: Path, at: tuple[str, int, str]) -> None:
    """%include_keys: the stanza's keys from another file, which holds nothing else."""
    for number, text in enumerate(_lines(path, at), 1):
        entry = _access_entry(str(path), number, text)
        if entry is None:
            continue
        var, value = entry
        if var not in _KEYS_FILE:
            raise ConfigError("fwknopd reads only KEY, KEY_BASE64, HMAC_KEY and "
                              "HMAC_KEY_BASE64 from an %include_keys file (it ignores the rest)",
                              source=str(path), line=number, key=var)  # fmt: skip
        _set(draft, var, value, str(path), number)


def read_access_file(path: Path) -> tuple[fwknopd.Stanza, ...]:
    """fwknopd's access.conf as aioknock's stanzas, in fwknopd's order (the first whose
    SOURCE matches and whose HMAC verifies decides); a ConfigError for whatever fwknopd
    would refuse, ignore, or read otherwise than it looks."""
    return _AccessReader().stanzas(path)


# ---------------------------------------------------------------------- .fwknoprc

Settings = tuple[tuple[str, str], ...]  # (aioknock setting, raw text) pairs


def _to(key: str, *, lower: bool = False) -> Callable[[str], Settings]:
    def read(value: str) -> Settings:
        return ((key, value.lower() if lower else value),)

    return read


def _allow_ip(value: str) -> Settings:
    """ALLOW_IP: ``source`` (the packet's source, fwknop -s) or an address."""
    word = value.lower()
    if word == "resolve":
        raise InvalidValue("resolve (asking a web service for this host's address) is not "
                           "implemented by aioknock; use source or an address")  # fmt: skip
    return (("allow_ip", "source" if word == "source" else value),)


def _use_hmac(value: str) -> Settings:
    """USE_HMAC: Y is what aioknock always does; fwknop reads all else as N."""
    if value.upper() == "Y":
        return ()
    if value.upper() == "N":
        raise InvalidValue("N: aioknock always uses HMAC (a packet without one is not "
                           "authenticated); remove the line")  # fmt: skip
    raise InvalidValue(f"expected Y, got '{shown(value)}' (fwknop would read it as N, and "
                       "aioknock always uses HMAC)")  # fmt: skip


def _rc_cbc(value: str) -> Settings:
    _cbc(value)
    return ()


def _verbose(value: str) -> Settings:
    """VERBOSE: Y or a level above 0 is debug 1; N or 0 is debug 0."""
    if value.upper() in ("Y", "N"):
        return (("debug", "1" if value.upper() == "Y" else "0"),)
    if value.isascii() and value.isdigit():
        return (("debug", "1" if int(value) else "0"),)
    raise InvalidValue(f"expected Y, N or a number, got '{shown(value)}'")


def _nothing(value: str) -> Settings:
    return ()  # NO_SAVE_ARGS: aioknock never saves arguments, whatever the value


_RC: dict[str, Callable[[str], Settings]] = {
    "SPA_SERVER": _to("remote"),
    "ACCESS": _to("access"),
    "ALLOW_IP": _allow_ip,
    "KEY": _to("key"),
    "KEY_BASE64": _to("key_base64"),
    "HMAC_KEY": _to("hmac_key"),
    "HMAC_KEY_BASE64": _to("hmac_key_base64"),
    "HMAC_DIGEST_TYPE": _to("hmac_digest_type", lower=True),
    "DIGEST_TYPE": _to("digest_type", lower=True),
    "SPA_SERVER_PORT": _to("spa_server_port"),
    "SPA_SERVER_PROTO": _to("spa_server_proto", lower=True),
    "FW_TIMEOUT": _to("client_timeout"),
    "SPOOF_USER": _to("spoof_user"),
    "USE_HMAC": _use_hmac,
    "ENCRYPTION_MODE": _rc_cbc,
    "NO_SAVE_ARGS": _nothing,
    "VERBOSE": _verbose,
}
_RC_NOT_IMPLEMENTED = {
    **dict.fromkeys(
        ("USE_GPG", "USE_GPG_AGENT", "GPG_RECIPIENT", "GPG_SIGNER", "GPG_HOMEDIR", "GPG_EXE",
         "GPG_SIGNING_PW", "GPG_SIGNING_PW_BASE64", "GPG_NO_SIGNING_PW"),
        "GnuPG encryption; use KEY_BASE64 and HMAC_KEY_BASE64",
    ),
    **dict.fromkeys(("KEY_FILE", "HMAC_KEY_FILE"),
                    "fwknop's key files; write KEY_BASE64 and HMAC_KEY_BASE64 here"),
    **dict.fromkeys(("NAT_ACCESS", "NAT_LOCAL", "NAT_PORT", "NAT_RAND_PORT"), "NAT requests"),
    **dict.fromkeys(
        ("RESOLVE_URL", "RESOLVE_IP_HTTP", "RESOLVE_IP_HTTPS", "RESOLVE_HTTP_ONLY", "WGET_CMD",
         "USE_WGET_USER_AGENT", "HTTP_USER_AGENT"),
        "asking a web service for this host's address",
    ),
    "SPA_SOURCE_PORT": "a fixed source port",
    "RAND_PORT": "a random destination port",
    "TIME_OFFSET": "time offsets",
    "SPOOF_SOURCE_IP": "spoofed source addresses",
    "SERVER_RESOLVE_IPV4": "IPv4-only name resolution; aioknock's family = 4 does it",
}  # fmt: skip
_RC_KNOWN = frozenset((*_RC, *_RC_NOT_IMPLEMENTED))
_RC_SECRETS = frozenset(("KEY", "KEY_BASE64", "HMAC_KEY", "HMAC_KEY_BASE64", "GPG_SIGNING_PW",
                         "GPG_SIGNING_PW_BASE64"))  # fmt: skip
_ENDS = "a value ends at the first space, tab, '#' or ';'"

RcValues = dict[str, tuple[Settings, int]]  # rc variable -> (its settings, line)


def _rc_entry(source: str, number: int, text: str) -> tuple[str, Settings]:
    """(variable, settings) of a line in a stanza that is read."""
    place: dict[str, Any] = {"source": source, "line": number}
    if not text.strip(_SPACE):
        raise _only_spaces(place, "fwknop")
    var = _variable(text)
    m = _RC_LINE.match(text)
    if var in _RC_NOT_IMPLEMENTED:
        raise ConfigError(f"not implemented by aioknock ({_RC_NOT_IMPLEMENTED[var]})", key=var,
                          **place)  # fmt: skip
    if var not in _RC_KNOWN:
        raise _refuse(var, m is not None, _RC_KNOWN, "fwknop", place)
    if m is None:
        raise ConfigError(f"has no value ({_ENDS})", key=var, **place)
    value, rest = m.group(1), m.group(2).lstrip(_SPACE)
    if rest and rest[0] not in "#;":
        read = "(not shown: a secret)" if var in _RC_SECRETS else f"'{shown(value)}'"
        raise ConfigError(f"text after the value: fwknop reads only {read} ({_ENDS}); "
                          "remove the spaces or what follows them", key=var, **place)  # fmt: skip
    try:
        return var, _RC[var](value)
    except InvalidValue as exc:
        raise ConfigError(str(exc), key=var, **place) from None


def _section(source: str, number: int, text: str) -> str | None:
    """The name of a ``[name]`` line (as fwknop: up to the first ']'), else None."""
    if (m := _SECTION.match(text)) is None:
        return None
    rest = m.group(2).strip(_SPACE)
    if rest and rest[0] not in "#;":
        raise ConfigError(f"text after '[{shown(m.group(1))}]', which fwknop ignores; remove it",
                          source=source, line=number)  # fmt: skip
    return m.group(1)


def _read_rc(path: Path, wanted: Collection[str]) -> tuple[list[str], dict[str, RcValues]]:
    """The stanza names, and the values of the ``wanted`` ones (lower-case names)."""
    names: list[str] = []
    read: dict[str, RcValues] = {}
    section: str | None = None
    for number, text in enumerate(_lines(path), 1):
        if _skipped(text):
            continue
        if (name := _section(str(path), number, text)) is not None:
            section = name
            if name.lower() not in (n.lower() for n in names):
                names.append(name)
            continue
        if section is None:
            if text.strip(_SPACE):
                raise ConfigError("before any [stanza] line, where fwknop ignores it; put it "
                                  "under [default]", source=str(path), line=number)  # fmt: skip
            continue
        if section.lower() not in wanted:
            continue  # another stanza's: fwknop does not read it either
        var, settings = _rc_entry(str(path), number, text)
        values = read.setdefault(section.lower(), {})
        if var in values:
            raise ConfigError(f"set twice in [{shown(section)}], at lines {values[var][1]} and "
                              f"{number}; keep one", source=str(path), line=number,
                              key=var)  # fmt: skip
        values[var] = (settings, number)
    return names, read


def _one_form(path: Path, stanza: str, values: RcValues) -> None:
    """KEY and KEY_BASE64 both in effect: fwknop takes KEY, aioknock KEY_BASE64; refused."""
    for plain, coded in (("KEY", "KEY_BASE64"), ("HMAC_KEY", "HMAC_KEY_BASE64")):
        if plain in values and coded in values:
            lines = {plain: values[plain][1], coded: values[coded][1]}
            last = max(lines, key=lambda var: lines[var])
            raise ConfigError(f"{plain} (line {lines[plain]}) and {coded} (line {lines[coded]}) "
                              f"both apply to [{shown(stanza)}], and fwknop would use {plain}; "
                              "keep one", source=str(path), line=lines[last],
                              key=last)  # fmt: skip


def read_fwknoprc(path: Path, stanza: str) -> Layer:
    """The fwknop client's rc file, ``[default]`` overridden by ``[stanza]``, as a layer
    of aioknock client settings (raw text, read by their kinds later) with
    ``protocol = spa``."""
    wanted = {"default", stanza.lower()}
    names, read = _read_rc(path, wanted)
    if stanza.lower() not in (n.lower() for n in names):
        have = ", ".join(f"[{shown(n)}]" for n in names) if names else "no [stanza] lines"
        raise ConfigError(f"no stanza [{shown(stanza)}]; the file has {have}", source=str(path))
    values = {**read.get("default", {}), **read.get(stanza.lower(), {})}
    _one_form(path, stanza, values)
    layer = Layer(f"{path} [{stanza}]")
    layer.add("protocol", "spa", str(path))
    for settings, number in values.values():
        for key, text in settings:
            layer.add(key, text, f"{path}:{number}")
    return layer
