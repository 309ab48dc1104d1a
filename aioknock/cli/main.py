"""``aioknock run`` and ``aioknock decode``: people read stderr, programs read ``--json`` on stdout."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..asyncio.logfile import write_knock
from ..asyncio.sender import resolve, send_knock
from ..codec.knock import KnockPlan
from ..config.loader import build_settings, find_config
from ..config.settings import ClientSettings
from ..errors import AioknockError, ConfigError, KnockError
from ..knock import codec_for, knock_inputs, local_address_for
from .manual import brief_usage, manual
from .options import add_settings, overrides, split_flags

log = logging.getLogger("aioknock")

EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message, source="command line")


def _parser(command: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=f"aioknock {command}", add_help=False, allow_abbrev=False)
    parser.add_argument("-h", "--help", "-help", action="store_true", help="brief usage")
    parser.add_argument("-man", "--man", action="store_true", help="the full manual")
    parser.add_argument("-conf", "--conf", "-c", metavar="FILE",
                        help="config file (Config::General format, or *.toml)")  # fmt: skip
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per knock on stdout")  # fmt: skip
    add_settings(parser, ClientSettings)
    if command == "decode":
        parser.add_argument("ports", nargs="*", type=str,
                            help="ports of one knock; none = one knock per line on stdin")  # fmt: skip
    return parser


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"aioknock: {level}{record.getMessage()}"


def _setup_logging(quiet: bool, debug: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("aioknock")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.ERROR if quiet else logging.DEBUG if debug else logging.INFO)


def _load(command: str, argv: Sequence[str]) -> tuple[argparse.Namespace, ClientSettings] | int:
    rest, flags = split_flags(argv)
    parser = _parser(command)
    ns = parser.parse_args(rest)
    if ns.help:
        print(brief_usage(command), file=sys.stderr)
        return 0
    if ns.man:
        print(manual("knockclient"))
        return 0
    given = overrides(ns, ClientSettings, flags)
    # Quiet/debug decide what loading itself may print, so they apply first.
    _setup_logging(bool(given.get("quiet")), int(given.get("debug") or 0))
    path = Path(ns.conf) if ns.conf else find_config("knockclient.conf")
    log.debug("config file: %s", path if path else "none found; built-in defaults")
    settings = build_settings(ClientSettings, path=path, overrides=given)
    _setup_logging(settings.quiet, settings.debug)
    if settings.debug >= 2:
        for name, value in settings.items(masked=True):
            log.debug("setting %s = %r  (%s)", name, value, settings.origin(name))
    return ns, settings


def _knock_json(remote: str, plan: KnockPlan) -> dict[str, Any]:
    return {"remote": remote, "values": plan.values, "payload": list(plan.payload),
            "ports": plan.ports}  # fmt: skip


async def _run(ns: argparse.Namespace, settings: ClientSettings) -> int:
    loop = asyncio.get_running_loop()
    codec = codec_for(settings)
    target = None if settings.logtofile else await resolve(settings.remote)
    remote = settings.remote if target is None else target.address
    client = settings.client
    if client.lower() in ("", "auto"):
        client = await loop.run_in_executor(None, local_address_for, remote)
    plan = codec.build(knock_inputs(settings, client), time.time(), secrets.token_bytes)
    log.info("knock for %s: %s", settings.remote, " ".join(map(str, plan.ports)))
    log.debug("values  %s", " ".join(map(str, plan.values)))
    log.debug("payload %s", " ".join(map(str, plan.payload)))
    if ns.json:
        print(json.dumps(_knock_json(settings.remote, plan)), flush=True)
    if settings.test:
        log.info("test mode: nothing sent")
        return 0
    if target is None:
        await write_knock(settings.logfile, settings.fileformat, client=client, remote=remote,
                          ports=plan.ports, timeout=settings.timeout)  # fmt: skip
        log.info("wrote %d lines to %s", len(plan.ports), settings.logfile)
        return 0
    attempts = await send_knock(target, plan.ports, settings.timeout)
    for a in attempts:
        log.debug("port %d: %s", a.port, a.outcome)
    log.info("sent %d knocks to %s (%s)", len(attempts), settings.remote, target.address)
    return 0


def _parse_ports(text: str) -> list[int]:
    try:
        return [int(p) for p in text.replace(",", " ").split()]
    except ValueError:
        raise KnockError(f"not a list of port numbers: {text.strip()!r}") from None


def _decode(ns: argparse.Namespace, settings: ClientSettings) -> int:
    from ..knock import parse_knock

    knocks = [" ".join(ns.ports)] if ns.ports else [ln for ln in sys.stdin if ln.strip()]
    status = 0
    for text in knocks:
        try:
            fields = parse_knock(settings, _parse_ports(text))
        except KnockError as exc:
            log.error("invalid knock: %s", exc.reason)
            if ns.json:
                print(json.dumps({"ok": False, "error": exc.reason}), flush=True)
            status = EXIT_FAILED
            continue
        if ns.json:
            print(json.dumps({"ok": True, "fields": fields}), flush=True)
        else:
            print(" ".join(f"{k}={v}" for k, v in fields.items()), flush=True)
    return status


def _event_loop_runner() -> asyncio.Runner:
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        return asyncio.Runner()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(False, 0)
    if not args or args[0] in ("-h", "--help", "-help"):
        print(brief_usage(None), file=sys.stderr)
        return 0 if args else EXIT_CONFIG
    command, rest = args[0], args[1:]
    if command not in ("run", "decode"):
        log.error("unknown command %r; expected run or decode (aioknock -h)", command)
        return EXIT_CONFIG
    try:
        loaded = _load(command, rest)
        if isinstance(loaded, int):
            return loaded
        ns, settings = loaded
        if command == "decode":
            return _decode(ns, settings)
        with _event_loop_runner() as runner:
            return runner.run(_run(ns, settings))
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    except AioknockError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
