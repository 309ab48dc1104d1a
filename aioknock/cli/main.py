"""``aioknock run`` and ``aioknock decode``: people read stderr, programs read ``--json``."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from ..asyncio.client import decode_knock
from ..config.files import Layer
from ..config.loader import build_settings, find_config, search_places
from ..config.settings import ClientSettings
from ..errors import AioknockError, ConfigError, KnockError, closest
from ..logs import DEBUG, ERROR, INFO, get_logger, hold, release, route, scoped
from ..records import Record
from ..version import __version__
from .exits import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED
from .loop import run_async
from .options import add_settings, overrides, setting_flags, split_flags, switch_values
from .output import emit, emit_json, silence_stdout
from .run import run

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, NoReturn

    from ..config.daemonsettings import DaemonSettings

log = get_logger("aioknock")

FWKNOPRC = "~/.fwknoprc"
HELP = ("-h", "--help", "-help")
VERSION = ("--version", "-version", "-V")


class _Spec(Record):
    __slots__ = ("manual",)

    def __init__(self, manual: str) -> None:
        self.manual = manual  # also the config file's name: knockclient.conf, knockdaemon.conf

    @property
    def settings(self) -> type[ClientSettings] | type[DaemonSettings]:
        """The command's table (the daemon's loads the daemon's modules: not for a client)."""
        if self.manual == "knockclient":
            return ClientSettings
        from ..config.daemonsettings import DaemonSettings

        return DaemonSettings

    @property
    def config_name(self) -> str:
        return f"{self.manual}.conf"


SPECS = {
    "run": _Spec("knockclient"),
    "decode": _Spec("knockclient"),
    "connect": _Spec("knockclient"),
    "daemon": _Spec("knockdaemon"),
}
COMMANDS = tuple(SPECS)


class _FixedWidth(argparse.HelpFormatter):
    """A width of its own: argparse's default reads the terminal's through shutil (which
    loads bz2, lzma and zlib: ~2 ms of a start), for help that is never printed here."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=100)


class _Parser(argparse.ArgumentParser):
    """Errors become one ConfigError line; unknown options get a did-you-mean. Its own
    help and usage are never shown (``-help`` and ``-man`` come from the settings table)."""

    def __init__(
        self, settings: type[ClientSettings] | type[DaemonSettings], **kwargs: Any
    ) -> None:
        super().__init__(formatter_class=_FixedWidth, **kwargs)
        self.settings = settings  # its flags: only those given are added (add_settings)

    def error(self, message: str) -> NoReturn:
        if m := re.fullmatch(r"unrecognized arguments: (\S+).*", message, re.DOTALL):
            word = m.group(1).split("=", 1)[0]
            if not word.startswith("-"):
                raise ConfigError(f"unexpected argument {word!r}", source="command line")
            known = {*self._option_string_actions, *setting_flags(self.settings)}
            options = sorted(o for o in known if o.startswith("-"))
            close = closest(word, options)
            hint = f"; did you mean {close}?" if close else " (aioknock run -h)"
            raise ConfigError(f"unknown option {word}{hint}", source="command line")
        if m := re.fullmatch(r"argument (\S+?)(?:/\S+)?: expected one argument", message):
            raise ConfigError(f"{m.group(1)} needs a value", source="command line")
        raise ConfigError(message, source="command line")


def _parser(command: str, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of ``argv``: the command's own arguments, and the settings it names."""
    # No one-letter options (-h and -c are handled before): argparse would read -cipherr as
    # "-c ipherr".
    settings = SPECS[command].settings
    parser = _Parser(settings, prog=f"aioknock {command}", add_help=False, allow_abbrev=False)
    parser.add_argument("-help", "--help", action="store_true", help="brief usage")
    parser.add_argument("-man", "--man", action="store_true", help="the full manual")
    parser.add_argument("-conf", "--conf", metavar="FILE",
                        help="config file (Config::General format, or *.toml)")  # fmt: skip
    parser.add_argument("-json", "--json", action="store_true",
                        help="one JSON object per knock on stdout")  # fmt: skip
    add_settings(parser, settings, argv)
    if command == "run":
        parser.add_argument("targets", nargs="*", metavar="HOST",
                            help="hosts to knock (default: remote)")  # fmt: skip
        parser.add_argument("-hosts", "--hosts", metavar="FILE",
                            help="one host per line ('-': stdin); host key=value ...")  # fmt: skip
        parser.add_argument("-fwknoprc", "--fwknoprc", metavar="FILE", nargs="?",
                            const=FWKNOPRC, help="read fwknop's rc file (default "
                            f"{FWKNOPRC}): [default] and the stanza -n names")  # fmt: skip
        parser.add_argument("--named-config", dest="stanza", metavar="STANZA",
                            help="the stanza of --fwknoprc (fwknop's -n)")  # fmt: skip
    if command == "connect":
        # Not dest "port": that is the -port setting (the port the knock asks for).
        parser.add_argument("connect_host", metavar="HOST", help="host to knock and connect to")
        parser.add_argument("connect_port", metavar="PORT", help="port to connect to (%%p)")
    if command == "decode":
        parser.add_argument(
            "ports", nargs="*", type=str,
            help="ports of one knock; none = one knock per line on stdin",
        )  # fmt: skip
    return parser


def _floor(quiet: bool, debug: int) -> int:
    return ERROR if quiet else DEBUG if debug else INFO


def _install_handler(level: int) -> None:
    from .stderrlog import install  # logging: only once a record is shown

    install(level)


def _load(
    command: str, argv: Sequence[str]
) -> tuple[argparse.Namespace, ClientSettings | DaemonSettings] | int:
    if any(arg in HELP for arg in argv):
        emit(_help(command))
        return 0
    # -c is an exact alias only: as a real one-letter option argparse would take -cipherr as -c.
    aliases = {"-c": "-conf", "-4": "--family=4", "-6": "--family=6", "-n": "--named-config"}
    spec = SPECS[command]
    argv = switch_values([aliases.get(arg, arg) for arg in argv], spec.settings)
    rest, flags = split_flags(argv)
    parser = _parser(command, rest)
    ns = parser.parse_args(rest)
    ns.argv = list(argv)
    if ns.help:
        emit(_help(command))
        return 0
    if ns.man:
        emit(_help(command, full=True))
        return 0
    given = overrides(ns, spec.settings, flags)
    extra = _fwknoprc(ns)
    path = _given_path(ns.conf) if ns.conf else find_config(spec.config_name)
    # What loading says waits until -quiet/-debug are known: they may come from the file.
    # A bug while loading: the command line's -debug (the traceback), else what loading said.
    cli_debug = int(given.get("debug") or 0)
    floor = DEBUG if cli_debug else INFO
    hold()
    try:
        if path is not None:
            how = "" if ns.conf else " (first found on the search path)"
            log.debug("config file: %s%s", path, how)
        else:
            searched = ", ".join(search_places(spec.config_name))
            log.debug("config file: none found (searched %s); built-in defaults", searched)
        settings = build_settings(
            spec.settings,
            path=path,
            overrides=given,
            sending=command == "run",
            extra_layers=extra,
        )
        floor = _floor(settings.quiet, settings.debug)
    except ConfigError:  # the error alone (one line), unless -debug asks for more
        floor = _floor(bool(given.get("quiet")) or not cli_debug, cli_debug)
        raise
    finally:
        release(floor)
    ns.reload = lambda: build_settings(spec.settings, path=path, overrides=given, sending=False,
                                       extra_layers=extra)  # fmt: skip
    if settings.debug >= 2:
        for name, value in settings.shown():
            log.debug("setting %s = %r  (%s)", name, value, settings.origin(name))
    return ns, settings


def _help(command: str | None, *, full: bool = False) -> str:
    """-h's usage, or -man's manual (it and its textwrap, whose patterns are compiled at
    import: for these only)."""
    from .manual import brief_usage, manual

    return manual(SPECS[command].manual) if full and command else brief_usage(command)


def _fwknoprc(ns: argparse.Namespace) -> list[Layer]:
    """fwknop's rc file as a layer of settings, when ``--fwknoprc`` asks for it."""
    rc, stanza = getattr(ns, "fwknoprc", None), getattr(ns, "stanza", None)
    if rc is None:
        if stanza is not None:
            raise ConfigError("-n names a stanza of --fwknoprc; give --fwknoprc too",
                              source="command line")  # fmt: skip
        return []
    from ..config.fwknopconf import read_fwknoprc  # only where --fwknoprc is given

    return [read_fwknoprc(_given_path(rc).expanduser(), stanza or "default")]


def _given_path(text: str) -> Path:
    from pathlib import Path  # only where a file is named: a plain run needs none (~3 ms)

    return Path(text)


def _port_numbers(words: Sequence[str]) -> list[int] | None:
    try:
        return [int(w, 10) for w in words]
    except ValueError:
        return None


def _knock_ports(text: str) -> list[int]:
    """One knock from stdin: port numbers (spaces or commas), or a ``run --json`` line."""
    if text.lstrip().startswith("{"):
        import json

        try:
            ports = json.loads(text)["ports"]
        except (ValueError, KeyError, TypeError):
            raise KnockError("a JSON line without a list of ports") from None
        if isinstance(ports, list) and all(type(p) is int for p in ports):
            return ports
        raise KnockError("a JSON line whose ports are not whole numbers")
    numbers = _port_numbers(text.replace(",", " ").split())
    if numbers is None:
        raise KnockError(f"not a list of port numbers: {text.strip()!r}")
    return numbers


def _decode(ns: argparse.Namespace, settings: ClientSettings) -> int:
    if ns.ports:
        if (numbers := _port_numbers(ns.ports)) is None:
            bad = next(w for w in ns.ports if _port_numbers([w]) is None)
            raise ConfigError(f"decode: {bad!r} is not a port number", source="command line")
        knocks: list[tuple[str, str]] = [("", " ".join(map(str, numbers)))]
    else:
        if sys.stdin is None or sys.stdin.isatty():
            raise ConfigError(
                "decode: give the ports of a knock, or one knock per line on stdin",
                source="command line",
            )
        knocks = [(f"line {n}: ", ln) for n, ln in enumerate(sys.stdin, 1) if ln.strip()]
        if not knocks:
            raise ConfigError("decode: no knock on stdin", source="standard input")
    status = 0
    for where, text in knocks:
        try:
            fields = decode_knock(settings, _knock_ports(text))
        except KnockError as exc:
            log.error("%sinvalid knock: %s", where, exc.reason)
            status = EXIT_FAILED
            if ns.json and not emit_json({"ok": False, "error": exc.reason}):
                break
            continue
        shown = " ".join(f"{k}={v}" for k, v in fields.items())
        if not (emit_json({"ok": True, "fields": fields}) if ns.json else emit(shown)):
            return EXIT_FAILED
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """The ``aioknock`` command; returns the exit status (0, 1, 2 or 130)."""
    with scoped():  # the logging set up here is put back, for in-process callers
        return _main(list(sys.argv[1:] if argv is None else argv))


def _main(args: list[str]) -> int:
    route(INFO, _install_handler)
    chosen = _command(args)
    if isinstance(chosen, int):
        return chosen
    try:
        return _execute(*chosen)
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
        silence_stdout()
        return EXIT_FAILED
    except Exception as exc:  # a bug: one line, the traceback only with -debug
        log.error("internal error: %s: %s (run with -debug for the traceback)",
                  type(exc).__name__, exc)  # fmt: skip
        import traceback  # for a bug only

        log.debug("%s", "".join(traceback.format_exception(exc)).rstrip())
        return EXIT_FAILED


def _command(args: list[str]) -> tuple[str, list[str]] | int:
    """The command and its arguments, or the exit status of a usage answer."""
    if not args or args[0] in HELP:
        if args:
            emit(_help(None))
            return 0
        print(_help(None), file=sys.stderr)
        return EXIT_CONFIG
    if args[0] in VERSION:
        emit(f"aioknock {__version__}")
        return 0
    if args[0] in COMMANDS or args[0] == "keygen":
        return args[0], args[1:]
    if args[0].startswith("-"):  # the prototype's "knockclient -conf f -test"
        return "run", args
    close = closest(args[0], COMMANDS)
    hint = f"did you mean {close}? " if close else ""
    log.error("unknown command %r; %sexpected run, connect, decode, daemon or keygen "
              "(aioknock -h)", args[0], hint)  # fmt: skip
    return EXIT_CONFIG


def _execute(command: str, rest: list[str]) -> int:
    if command == "keygen":
        from .keygen import keygen  # its key derivation: for keygen only

        return keygen(rest)
    loaded = _load(command, rest)
    if isinstance(loaded, int):
        return loaded
    ns, settings = loaded
    if command == "decode":
        assert isinstance(settings, ClientSettings)
        return _decode(ns, settings)
    if command == "daemon":
        # Each command imports what it runs: a one-host run needs no event loop at all.
        from ..asyncio.daemon import serve

        assert not isinstance(settings, ClientSettings)
        return run_async(serve(settings, ns.reload))
    assert isinstance(settings, ClientSettings)
    if command == "connect":
        from ..asyncio.connect import connect

        return connect(settings, ns.connect_host, _connect_port(ns))
    return run(ns, settings)


def _connect_port(ns: argparse.Namespace) -> int:
    """``connect``'s PORT; its stdout is the connection's, so there is no -json."""
    if ns.json:
        raise ConfigError("connect's stdout carries the connection: no -json",
                          source="command line")  # fmt: skip
    port: str = ns.connect_port
    if not (port.isascii() and port.isdigit()):
        raise ConfigError(f"PORT: expected a port number, got {port!r}", source="command line")
    return int(port)


if __name__ == "__main__":
    sys.exit(main())
