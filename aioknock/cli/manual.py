"""The manual ships inside the package; its options section is generated from the settings table."""

from __future__ import annotations

import textwrap

from ..asyncio.hostknock import JSON_FIELDS
from ..config.settings import ClientSettings, table_of
from ..config.table import Table
from .exits import RUN_STATUSES


def options_text(cls: type[Table] = ClientSettings, indent: int = 4) -> str:
    blocks: list[str] = []
    pad = " " * indent
    for key in cls.table():
        shown = key.default_text
        default = "" if key.secret or not shown else f" Default: {shown}."
        head = f"{pad}{key.name} ({key.kind.expected})"
        body = textwrap.fill(
            key.help + "." + default, width=84, initial_indent=pad * 2, subsequent_indent=pad * 2
        )
        blocks.append(f"{head}\n{body}")
    if not issubclass(cls, ClientSettings):
        return "\n".join(blocks)
    blocks.append(
        f"{pad}flagN (a whole number 0-255; larger values are taken mod 256 with a warning)\n"
        f"{pad * 2}value of the knock's FLAGN field (flag0, flag1, ...). No default: a knock "
        f"that uses\n{pad * 2}FLAGN needs flagN set."
    )
    return "\n".join(blocks)


def json_fields_text(indent: int = 4) -> str:
    """The --json object's fields, from the table ``KnockResult.as_json`` writes."""
    pad = " " * indent
    return "\n".join(
        f"{pad}{name} ({kind})\n"
        + textwrap.fill(meaning + ".", width=84, initial_indent=pad * 2, subsequent_indent=pad * 2)
        for name, kind, meaning in JSON_FIELDS
    )


def exit_status_text(indent: int = 4) -> str:
    pad = " " * indent
    hang = pad + " " * 4
    lines = [f"{code:<4}{meaning}." for code, meaning in RUN_STATUSES]
    return "\n".join(
        textwrap.fill(line, width=84, initial_indent=pad, subsequent_indent=hang) for line in lines
    )


def manual(name: str) -> str:
    from importlib.resources import files  # with tempfile and shutil: ~3 ms, for -man only

    text = (files("aioknock") / "manual" / f"{name}.txt").read_text(encoding="utf-8")
    text = text.replace("{{JSON_FIELDS}}", json_fields_text())
    text = text.replace("{{EXIT_STATUS}}", exit_status_text())
    text = text.replace("{{DOOR_OPTIONS}}", options_text(table_of("door"), indent=8))
    return text.replace("{{OPTIONS}}", options_text(table_of(name)))


def brief_usage(command: str | None) -> str:
    if command is None:
        return (
            "usage: aioknock run [options] [HOST ...]   send a knock (aioknock run -h, -man)\n"
            "       aioknock connect [options] HOST PORT   knock, then relay stdin/stdout "
            "(ssh ProxyCommand)\n"
            "       aioknock decode [options] [PORT ...]   decode a knock\n"
            "       aioknock daemon [options]   open doors for valid knocks "
            "(aioknock daemon -man)\n"
            "       aioknock keygen [--fwknop | --derive HOST --master FILE] [-o FILE]   "
            "a new key (mode 600)\n"
            "       aioknock --version"
        )
    name = "knockdaemon" if command == "daemon" else "knockclient"
    text = manual(name)
    synopsis = text.split("SYNOPSIS\n", 1)[1].split("\nDESCRIPTION", 1)[0]
    keys = ", ".join(f"-{k.name}" for k in table_of(name).table())
    flags = ", -flagN" if name == "knockclient" else ""
    return (
        f"usage:\n{synopsis.rstrip()}\n\nsettings: {keys}{flags}\n"
        f"(full list: aioknock {command} -man)"
    )
