"""Imports point one way: codec <- daemon <- config <- asyncio <- cli (docs/design.md),
and a start-up imports only what its run needs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import TypeGuard

import pytest
from helpers.loopback import serving

PACKAGE = Path(__file__).resolve().parent.parent / "aioknock"
LAYERS = ["codec", "daemon", "config", "asyncio", "cli"]
SHARED = {"errors", "logs", "records", "version"}  # every layer may use these


def _layer_of(module: str) -> str:
    """``aioknock.daemon.engine`` -> ``daemon``; ``aioknock.errors`` -> ``errors``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _type_checking(node: ast.stmt) -> TypeGuard[ast.If]:
    return isinstance(node, ast.If) and ast.unparse(node.test) in (
        "TYPE_CHECKING",
        "typing.TYPE_CHECKING",
    )


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute aioknock module, imported at module level) for each import in ``path``."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    # ``if TYPE_CHECKING:`` at module level: for the type checker only, never run.
    top |= {id(n) for node in tree.body if _type_checking(node) for n in node.body}
    out: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names = [module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        out += [(name, id(node) in top) for name in names if name.startswith("aioknock")]
    return out


MODULES = sorted(p for layer in LAYERS for p in (PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_imports_only_point_down(path: Path) -> None:
    own = LAYERS.index(path.relative_to(PACKAGE).parts[0])
    for module, _ in _imports(path):
        layer = _layer_of(module)
        if layer in SHARED:
            continue
        assert layer in LAYERS, f"{path.name} imports {module}"
        assert LAYERS.index(layer) <= own, f"{path.parent.name}/{path.name} imports {module}"


def test_every_layer_is_read() -> None:
    """The checks above cannot pass for want of modules."""
    assert {p.relative_to(PACKAGE).parts[0] for p in MODULES} == set(LAYERS)
    assert len(MODULES) > 30


# Function-local imports of our own modules: only these, each for start-up time (a
# one-host run imports neither the event loop nor what its command does not use).
LOCAL_IMPORTS = {
    "cli/main.py: aioknock.asyncio.daemon": "the daemon, only to run it",
    "cli/main.py: aioknock.asyncio.connect": "connect, only to run it",
    "cli/main.py: aioknock.cli.keygen": "keygen (and its key derivation), only to run it",
    "cli/main.py: aioknock.config.fwknopconf": "fwknop's rc reader, where --fwknoprc is given",
    "cli/main.py: aioknock.config.daemonsettings": "the daemon's table, for the daemon only",
    "cli/main.py: aioknock.cli.stderrlog": "logging's handler, once a record is shown",
    "cli/main.py: aioknock.cli.manual": "-h and -man, and their textwrap",
    "cli/run.py: aioknock.cli.fleetrun": "the event loop and the fleet, for several hosts",
    "config/settings.py: aioknock.config": "the daemon's tables (daemonsettings), for it only",
    "config/files.py: aioknock.config.general": "the Config::General reader, when one is read",
}


def test_no_function_local_imports_of_our_own_modules() -> None:
    local = [
        f"{p.parent.name}/{p.name}: {module}"
        for p in MODULES
        for module, at_top in _imports(p)
        if not at_top
    ]
    assert sorted(local) == sorted(LOCAL_IMPORTS)


def _one_edit_apart(a: str, b: str) -> bool:
    """Equal but for one letter changed, added or dropped."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def test_module_names_differ_by_more_than_a_letter() -> None:
    stems = sorted(p.stem for p in MODULES if p.stem != "__init__")
    assert len(stems) == len(set(stems)), "two modules of one name"
    for i, a in enumerate(stems):
        for b in stems[i + 1 :]:
            assert not _one_edit_apart(a, b), (a, b)
    assert _one_edit_apart("knock", "knockd") and _one_edit_apart("logline", "loglines")


def _loaded_after(code: str, *, site: bool = True) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``, said on stderr's
    last line (``connect`` hands stdout to its connection, then to /dev/null). Without
    ``site`` (``-S``: aioknock from the checkout, no site-packages) nothing is loaded
    before ``code``, where an editable install's finder loads contextlib and pathlib."""
    probe = f"import sys\n{code}\nprint(' '.join(sys.modules), file=sys.stderr)"
    flags = [] if site else ["-S"]
    out = subprocess.run([sys.executable, *flags, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent, stdin=subprocess.DEVNULL,
                         timeout=30)  # fmt: skip
    return set(out.stderr.splitlines()[-1].split())


def test_import_aioknock_loads_no_layer() -> None:
    """Start-up time: the package's names are imported at first use (PEP 562)."""
    loaded = _loaded_after("import aioknock")
    assert {m for m in loaded if m.startswith("aioknock")} == {
        "aioknock", "aioknock.errors", "aioknock.version"
    }  # fmt: skip
    import aioknock

    assert set(aioknock.__all__) <= set(dir(aioknock))
    for name in aioknock.__all__:
        assert getattr(aioknock, name) is not None, name
    with pytest.raises(AttributeError, match="no_such_name"):
        aioknock.no_such_name  # noqa: B018


def test_a_client_start_up_loads_no_cryptography() -> None:
    """Start-up time: pycryptodome (~25 ms, its C parts through ctypes) is imported at
    first use: the settings and a prototype knock need none of it. (``secrets``, where
    every random value comes from, brings hashlib with it.)"""
    loaded = _loaded_after(
        "import aioknock.config.settings, aioknock.asyncio.client, aioknock.asyncio.fleet"
    )
    assert not {m for m in loaded if m == "Crypto" or m.startswith("Crypto.")}


@pytest.mark.parametrize("command", ["run", "connect"])
def test_a_one_host_knock_loads_only_what_it_uses(command: str) -> None:
    """Start-up time: a prototype knock to one host (9 SYNs to 127.0.0.1, nothing
    listens), and ``connect``'s knock and connection, load no event loop, no dataclass
    machinery (each dataclass compiles its methods at start), no configuration library,
    no pathlib (no file is named or found), no JSON, manual or daemon module, no
    contextlib or resource (an event loop's files limit), and no logging: at the default
    level, a knock that goes well shows its own lines only."""
    with serving(lambda conn: None) as server:  # closes each connection at once
        port = server.port
        target = "'127.0.0.1'" if command == "run" else f"'127.0.0.1', '{port}'"
        loaded = _loaded_after(
            "import sys\n"
            f"sys.argv = ['aioknock', '{command}', '-timeout', '0', {target}]\n"
            "from aioknock.__main__ import start\n"
            "assert start() == 0\n"
            "import gc\n"  # the imports' objects frozen, the collector on again
            "assert gc.isenabled() and gc.get_freeze_count() > 10000, gc.get_freeze_count()",
            site=False,
        )
    unwanted = ("asyncio", "uvloop", "dataclasses", "inspect", "config", "tomllib", "json",
                "pathlib", "typing", "difflib", "importlib.resources", "Crypto",
                "aioknock.daemon", "logging", "traceback", "textwrap", "contextlib",
                "resource")  # fmt: skip
    loaded -= _loaded_after("pass", site=False)  # the interpreter's own
    assert "aioknock.asyncio.oneshot" in loaded
    assert not sorted(
        m for m in loaded if m in unwanted or m.startswith(tuple(f"{u}." for u in unwanted))
    )
