"""``aioknock keygen``: new keys, written where nothing else can read them.

Plain ``keygen`` makes a key for ``key_file``: one line, 32 random bytes from
``secrets`` in base64 (the prototype's ciphers take the line as their passphrase).
``--fwknop`` makes a pair in the format of fwknop's ``--key-gen``: 32 random bytes for
AES and 64 for the HMAC, each as standard base64, on the two lines fwknop prints and
its rc and access files take (``KEY_BASE64: ...``, ``HMAC_KEY_BASE64: ...``).
``--derive HOST --master FILE`` writes one host's sealed-knock key, derived from a
fleet's master key (a key file as plain ``keygen`` makes it) by HKDF
(``codec.sealed.host_key``); that host's ``server_id`` is HOST. The admin keeps the
master and each server only its own key, so a server that is broken into holds
nothing that opens the others. A file is created with mode 600 and never overwritten:
a key that is replaced by mistake locks its users out.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import secrets
import sys
from collections.abc import Sequence

from ..codec.sealed import canonical_host, host_key, key_from_text
from ..config.regular import MAX_KEY, read_regular
from ..errors import AioknockError, ConfigError, InvalidValue

KEY_BYTES, HMAC_KEY_BYTES = 32, 64


def knock_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n"


def fwknop_keys() -> str:
    key = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()
    hmac_key = base64.b64encode(secrets.token_bytes(HMAC_KEY_BYTES)).decode()
    return f"KEY_BASE64: {key}\nHMAC_KEY_BASE64: {hmac_key}\n"


def derived_key(master_file: str, host: str) -> str:
    """The key line of ``host``, derived from the master key in ``master_file``."""
    try:
        name = canonical_host(host)
    except InvalidValue as exc:
        raise ConfigError(f"--derive: {exc}", source="command line") from None
    return base64.b64encode(host_key(read_master(master_file), name)).decode() + "\n"


def read_master(path: str) -> bytes:
    """A master key file: exactly one line, base64 of 32 bytes (``aioknock keygen``'s)."""
    expected = "expected one line of base64 holding 32 bytes (a key made by aioknock keygen)"
    try:
        data = read_regular(path, MAX_KEY)
    except ValueError:  # a NUL in the name
        raise ConfigError(f"{path!r} is not a usable file name", key="--master") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the master key: {exc.strerror or exc}",
                          source=path) from None  # fmt: skip
    lines = data.splitlines()
    if len(lines) != 1:
        raise ConfigError(f"{expected}; the file has {len(lines)} lines", source=path)
    try:
        return key_from_text(lines[0].decode("ascii"))
    except (UnicodeDecodeError, InvalidValue):  # the reason never shows the file's bytes
        raise ConfigError(expected, source=path) from None


def write_new(path: str, text: str) -> None:
    """Create ``path`` (mode 600, not there before) holding ``text``, whole or not at all."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)  # fmt: skip
    except FileExistsError:
        raise AioknockError(f"{path} exists; not overwritten (remove it first)") from None
    except OSError as exc:
        raise AioknockError(f"cannot create {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise AioknockError(f"cannot write {path}: {exc.strerror}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message, source="command line")


def keygen(argv: Sequence[str]) -> int:
    parser = _Parser(prog="aioknock keygen", add_help=False, allow_abbrev=False)
    parser.add_argument("--fwknop", "-fwknop", action="store_true",
                        help="a key pair for fwknop SPA: KEY_BASE64, HMAC_KEY_BASE64 "
                        "(default: one key line for key_file)")  # fmt: skip
    parser.add_argument("--derive", "-derive", metavar="HOST",
                        help="HOST's sealed-knock key, derived from --master; HOST is its "
                        "server_id")  # fmt: skip
    parser.add_argument("--master", "-master", metavar="FILE",
                        help="the fleet's master key (a key file from keygen)")  # fmt: skip
    parser.add_argument("-o", "--output", metavar="FILE", default="-",
                        help="file to create, mode 600 ('-' or none: standard output)")  # fmt: skip
    ns = parser.parse_args(list(argv))
    if ns.derive is not None:
        if ns.master is None:
            raise ConfigError("--derive HOST needs --master FILE (the fleet's master key)",
                              source="command line")  # fmt: skip
        if ns.fwknop:
            raise ConfigError("--derive makes a sealed-knock key, --fwknop an fwknop pair: "
                              "not both", source="command line")  # fmt: skip
        text = derived_key(ns.master, ns.derive)
    elif ns.master is not None:
        raise ConfigError("--master FILE is read only with --derive HOST", source="command line")
    else:
        text = fwknop_keys() if ns.fwknop else knock_key()
    if ns.output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_new(ns.output, text)
    return 0
