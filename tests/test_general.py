"""Tests for the Config::General reader, including a differential test against the real Perl module.

The differential tests run ``Config::General->new(-ConfigFile => $f)->getall`` (default
options) in one ``perl`` process per batch and compare its hash with our entries folded the
way Perl folds them (duplicates become arrays, ``<name label>`` nests by label).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aioknock.config import perlrules as rules
from aioknock.config.general import Block, Entry, parse_general, read_general
from aioknock.errors import ConfigError


def _perl_available() -> bool:
    try:
        probe = subprocess.run(["perl", "-MConfig::General", "-e1"], capture_output=True)
    except OSError:
        return False
    return probe.returncode == 0


needs_perl = pytest.mark.skipif(
    not _perl_available(),
    reason="perl with Config::General is not installed (Debian: libconfig-general-perl)",
)

# Reads [{file, cwd, opts}] as JSON on stdin; prints [{config, error, warnings}].
# Values are Perl byte strings, printed raw, so the output decodes as UTF-8.
PERL_SCRIPT = r"""
use strict; use warnings; use Config::General; use JSON::PP; use Cwd qw(getcwd);
my $json = JSON::PP->new->canonical->allow_nonref;
my $jobs = $json->decode(do { local $/; <STDIN> });
my $home = getcwd();
my @out;
for my $job (@$jobs) {
    my @warn;
    local $SIG{__WARN__} = sub { push @warn, "$_[0]" };
    chdir $job->{cwd} or die "chdir $job->{cwd}: $!";
    my %cfg;
    my $ok = eval {
        %cfg = Config::General->new(-ConfigFile => $job->{file}, %{$job->{opts}})->getall; 1
    };
    push @out, { config => $ok ? \%cfg : undef, error => $ok ? undef : "$@", warnings => \@warn };
    chdir $home;
}
binmode STDOUT;
print $json->encode(\@out);
"""


def run_perl(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        ["perl", "-e", PERL_SCRIPT],
        input=json.dumps(jobs).encode(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    result: list[dict[str, Any]] = json.loads(proc.stdout.decode("utf-8"))
    return result


class Croak(Exception):
    """Perl's getall would croak on this structure (e.g. a block named like a scalar)."""


def perl_view(entries: Iterable[Entry]) -> dict[str, Any]:
    """Fold entries into the hash Config::General::_parse builds with default options."""
    out: dict[str, Any] = {}
    for e in entries:
        if not isinstance(e.value, Block):
            old = out.get(e.key)
            has = e.key in out
            out[e.key] = ((old if isinstance(old, list) else [old]) + [e.value]) if has else e.value
            continue
        b, inner = e.value, perl_view(e.value.entries)
        cur = out.get(b.name)
        if b.label:  # named: config->{name}->{label}
            holder = out.setdefault(b.name, {})
            if not isinstance(holder, dict):
                raise Croak(b.name)
            if b.label in holder:
                old = holder[b.label]
                holder[b.label] = (old if isinstance(old, list) else [old]) + [inner]
            else:
                holder[b.label] = inner
        elif b.name not in out:
            out[b.name] = inner
        elif isinstance(cur, str):
            raise Croak(b.name)
        else:
            out[b.name] = (cur if isinstance(cur, list) else [cur]) + [inner]
    return out


def write_files(root: Path, files: Mapping[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        path.write_bytes(data)


def flat(entries: Iterable[Entry]) -> list[tuple[str, str | tuple[str, str], str, int]]:
    """(key, value-or-(name, label), source, line), depth-first, for concise assertions."""
    rows: list[tuple[str, str | tuple[str, str], str, int]] = []
    for e in entries:
        if isinstance(e.value, Block):
            rows.append((e.key, (e.value.name, e.value.label), e.source, e.line))
            rows.extend(flat(e.value.entries))
        else:
            rows.append((e.key, e.value, e.source, e.line))
    return rows


def kv(text: str) -> list[tuple[str, str | tuple[str, str]]]:
    return [(k, v) for k, v, _, _ in flat(parse_general(text))]


# --------------------------------------------------------------------------- features


def test_separators_and_trimming() -> None:
    text = "a = 1\nb 2\nc=3\nd\t4\n  e   =   five six  \nf= x = y\n"
    assert kv(text) == [
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("d", "4"),
        ("e", "five six"),
        ("f", "x = y"),
    ]


def test_empty_values() -> None:
    assert kv("client =\nclient=\nc = \nd = # gone\n") == [
        ("client", ""),
        ("client", ""),
        ("c", ""),
        ("d", ""),
    ]


def test_hash_comments_and_escaped_hash() -> None:
    text = "# full line\n   # indented\na = 1 # trailing\nb = 2#tight\nc = \\#lit\nd = a\\#b # x\n"
    assert kv(text) == [("a", "1"), ("b", "2"), ("c", "#lit"), ("d", "a#b")]


def test_double_quotes_are_stripped_but_hash_still_comments() -> None:
    # Verified against Perl: one pair of enclosing quotes is removed; '#' inside quotes
    # still starts a comment; inner quotes and single quotes stay; \" becomes ".
    text = (
        'a = "with  spaces"\nb = "x # y"\nc = "a"b"\nd = "q"x\ne = "\nf = ""\n'
        "g = 'single'\n" + 'h = \\"x\\"\ni = " pad "\n'
    )
    assert kv(text) == [
        ("a", "with  spaces"),
        ("b", '"x'),
        ("c", 'a"b'),
        ("d", '"q"x'),
        ("e", ""),
        ("f", ""),
        ("g", "'single'"),
        ("h", '"x"'),
        ("i", " pad "),
    ]


def test_a_quoted_value_keeps_its_spaces_an_unquoted_one_loses_them_at_its_ends() -> None:
    """A passphrase's bytes, as Config::General gives them to the prototype's Crypt::CBC
    (the differential case "secret-spaces" holds Perl to the same): the line loses its
    outer whitespace (a CR too), then one pair of enclosing quotes goes, and what was
    inside them stays; here-doc bodies lose theirs as Perl's do."""
    text = (
        'key = " secret "\nkey2 "\t tab \t"  \r\nkey3 =   bare  secret \t \r\n'
        "key4 = \"  \"\nkey5 = 'single '\nkey6 <<EOF\n  here  \nEOF\n"
    )
    assert kv(text) == [
        ("key", " secret "),
        ("key2", "\t tab \t"),
        ("key3", "bare  secret"),
        ("key4", "  "),
        ("key5", "'single '"),  # single quotes are the value's own characters
        ("key6", "here"),
    ]


def test_backslash_escapes_in_values_only() -> None:
    assert kv("a\\#b = \\$x \\\\ \\n\n") == [("a\\#b", "$x \\ \\n")]


def test_c_comments() -> None:
    text = (
        "/* one line */\na = 1 /* inline */ 2\n/*\nhidden = 1\n*/\nb = 3\n"
        "  /* start\n  still */ c = 4\ne = x /* a */ y /* b */ z\nf = keep /* not closed here\n"
    )
    assert kv(text) == [
        ("a", "12"),
        ("b", "3"),
        ("c", "4"),
        ("e", "xz"),
        ("f", "keep /* not closed here"),
    ]


def test_backslash_continuation() -> None:
    text = "a = 1 \\\n    2 \\\n  3\nb = x\\\ny\nc = z \\\n\nd = 4\ne = 5 \\ # not continued\n"
    entries = parse_general(text)
    assert [(e.key, e.value, e.line) for e in entries] == [
        ("a", "1 2 3", 1),
        ("b", "xy", 4),
        ("c", "z", 6),
        ("d", "4", 8),
        ("e", "5 \\", 9),
    ]


def test_crlf_keeps_perl_semantics() -> None:
    # Perl only chomps "\n": trailing "\r" is trimmed as whitespace, but "\\\r" does not continue.
    assert kv("a = 1\r\nb = x \\\r\nc = 2\r\n") == [("a", "1"), ("b", "x \\"), ("c", "2")]


def test_heredocs() -> None:
    text = (
        "a <<EOF\nline1\n  line2 # kept\nEOF\n"
        "b = <<END\n    x\n      y\n  z\n    END\n"
        "c <<E\nE\n"
        'd <<EOF\n"quoted"\n/* kept */\nEOF\n'
    )
    entries = parse_general(text)
    assert [(e.key, e.value, e.line) for e in entries] == [
        ("a", "line1\n  line2 # kept", 1),
        ("b", "x\n  y\n  z", 5),
        ("c", "", 10),
        ("d", '"quoted"\n/* kept */', 12),
    ]


def test_blocks_nested_labelled_and_unlabelled() -> None:
    text = (
        "<door ssh>\n  port 22\n  <inner>\n    x = 1\n  </inner>\n</door>\n"
        '<door "my label">\n</door>\n<"quoted name">\nk = v\n</x>\n<empty/>\n<lab x/>\n'
    )
    entries = parse_general(text, "f.conf")
    assert flat(entries) == [
        ("door", ("door", "ssh"), "f.conf", 1),
        ("port", "22", "f.conf", 2),
        ("inner", ("inner", ""), "f.conf", 3),
        ("x", "1", "f.conf", 4),
        ("door", ("door", "my label"), "f.conf", 7),
        ("quoted name", ("quoted name", ""), "f.conf", 9),
        ("k", "v", "f.conf", 10),
        ("empty", ("empty", ""), "f.conf", 12),
        ("lab", ("lab", "x"), "f.conf", 13),
    ]
    assert isinstance(entries[0].value, Block)
    assert entries[0].value.entries[1].value == Block("inner", "", (Entry("x", "1", "f.conf", 4),))


def test_duplicates_kept_in_order() -> None:
    entries = parse_general("a = 1\nb = 2\na = 3\n")
    assert [(e.key, e.value, e.line) for e in entries] == [
        ("a", "1", 1),
        ("b", "2", 2),
        ("a", "3", 3),
    ]


def test_apache_style_include_is_a_plain_option() -> None:
    assert kv("include other.conf\n") == [("include", "other.conf")]


def test_include_relative_to_including_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_files(
        tmp_path,
        {
            "etc/main.conf": "a = 1\n<<include sub/a.conf>>\n"
            "<door x>\n<<INCLUDE body.conf>>\n</door>\nz = 9\n",
            "etc/sub/a.conf": "x = 1\n<<include b.conf>>\n",
            "etc/sub/b.conf": "y = 2\n",
            "etc/body.conf": "\n\nport = 7\n",
        },
    )
    monkeypatch.chdir("/")  # the cwd must not matter
    main = tmp_path / "etc/main.conf"
    assert flat(read_general(main)) == [
        ("a", "1", str(main), 1),
        ("x", "1", str(tmp_path / "etc/sub/a.conf"), 1),
        ("y", "2", str(tmp_path / "etc/sub/b.conf"), 1),
        ("door", ("door", "x"), str(main), 3),
        ("port", "7", str(tmp_path / "etc/body.conf"), 3),
        ("z", "9", str(main), 6),
    ]


def test_parse_general_include_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_files(tmp_path, {"inc.conf": "k = v\n"})
    text = "<<include inc.conf>>\n"
    got = parse_general(text, base_dir=tmp_path)
    assert [(e.key, e.source) for e in got] == [("k", str(tmp_path / "inc.conf"))]
    monkeypatch.chdir(tmp_path)  # "<string>" resolves against the cwd, like Perl
    assert [(e.key, e.source) for e in parse_general(text)] == [("k", "inc.conf")]


def test_read_general_utf8_bom_and_str_path(tmp_path: Path) -> None:
    write_files(tmp_path, {"u.conf": "\ufeffname = Grüße\n"})
    assert read_general(str(tmp_path / "u.conf")) == [
        Entry("name", "Grüße", str(tmp_path / "u.conf"), 1)
    ]


def test_entry_and_block_are_frozen() -> None:
    e = Entry("k", "v", "s", 1)
    with pytest.raises(AttributeError):
        e.key = "x"
    assert not hasattr(e, "__dict__") and not hasattr(Block("a", "", ()), "__dict__")


# --------------------------------------------------------------------------- errors


def expect_error(text: str, line: int, *needles: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_general(text, "x.conf")
    err = info.value
    assert (err.source, err.line) == ("x.conf", line)
    assert str(err).startswith(f"x.conf:{line}: ")
    for needle in needles:
        assert needle in str(err)
    return err


def test_error_unclosed_block() -> None:
    expect_error("a = 1\n<door ssh>\nk v\n", 2, "<door ssh>", "never closed")
    expect_error("<a>\n<b>\n</b>\n", 1, "<a>")


def test_error_stray_end_tag() -> None:
    expect_error("a = 1\n</x>\n", 2, "</x>")
    expect_error("<a>\n</a>\n</a>\n", 3)
    expect_error("url = <http://x/>\n", 1, "</http://x>")  # Perl: <x/> is <x></x> anywhere


def test_error_unterminated_heredoc() -> None:
    expect_error("a = 1\nmsg <<EOF\nhello\n", 2, "msg <<EOF", "'EOF'")


def test_error_unterminated_c_comment() -> None:
    expect_error("a = 1\n/* start\nb = 2\n", 2, "/*")


def test_error_stray_c_comment_end() -> None:
    expect_error("a = 1\nb = x*/y\n", 2, "*/")


def test_error_continuation_at_eof() -> None:
    expect_error("a = 1\nb = 2 \\\n", 2, "\\")


def test_error_option_without_value() -> None:
    err = expect_error("a = 1\nlonely\n", 2, "lonely", "no value")
    assert err.key == "lonely"
    expect_error("k # only a comment after the key\n", 1, "k:")


def test_error_missing_include(tmp_path: Path) -> None:
    write_files(tmp_path, {"m.conf": "a = 1\n<<include nope.conf>>\n"})
    with pytest.raises(ConfigError) as info:
        read_general(tmp_path / "m.conf")
    assert str(info.value).startswith(f"{tmp_path / 'm.conf'}:2: ")
    assert str(tmp_path / "nope.conf") in str(info.value)


def test_error_quoted_include_name_keeps_quotes(tmp_path: Path) -> None:
    # Perl 2.65's quoted-include regex never matches, so the quotes are part of the name.
    write_files(tmp_path, {"m.conf": '<<include "q.conf">>\n', "q.conf": "k = v\n"})
    with pytest.raises(ConfigError, match=r'm\.conf:1: .*"q\.conf"'):
        read_general(tmp_path / "m.conf")


def test_error_include_cycle(tmp_path: Path) -> None:
    write_files(
        tmp_path, {"a.conf": "x = 1\n<<include b.conf>>\n", "b.conf": "\n<<include a.conf>>\n"}
    )
    with pytest.raises(ConfigError) as info:
        read_general(tmp_path / "a.conf")
    assert str(info.value).startswith(f"{tmp_path / 'b.conf'}:2: include cycle: ")
    assert "a.conf -> " in str(info.value)


def test_error_self_include_via_parse_general(tmp_path: Path) -> None:
    write_files(tmp_path, {"s.conf": "<<include s.conf>>\n"})
    with pytest.raises(ConfigError, match=r"s\.conf:1: include cycle"):
        parse_general("<<include s.conf>>\n", base_dir=tmp_path)


def test_error_same_file_included_twice(tmp_path: Path) -> None:
    write_files(
        tmp_path, {"m.conf": "<<include i.conf>>\n<<include ./i.conf>>\n", "i.conf": "k=1\n"}
    )
    with pytest.raises(ConfigError, match=r"m\.conf:2: .*already included"):
        read_general(tmp_path / "m.conf")


def test_error_error_inside_included_file_names_it(tmp_path: Path) -> None:
    write_files(tmp_path, {"m.conf": "<<include i.conf>>\n", "i.conf": "ok = 1\n\nbad\n"})
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'i.conf'}:3: bad: "):
        read_general(tmp_path / "m.conf")


def test_error_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'missing.conf'}: cannot read"):
        read_general(tmp_path / "missing.conf")
    write_files(
        tmp_path, {"bad.conf": b"a = 1\nb = \xff\n", "d/x": "", "inc.conf": "<<include d>>\n"}
    )
    with pytest.raises(
        ConfigError, match=r"bad\.conf: cannot read file: line 2 is not valid UTF-8"
    ):
        read_general(tmp_path / "bad.conf")
    with pytest.raises(ConfigError, match=r"inc\.conf:1: cannot read .*d: Is a directory"):
        read_general(tmp_path / "inc.conf")


# --------------------------------------------------------------------------- differential


@dataclass(frozen=True)
class Case:
    """Files (main.conf is read) and what Perl does with them.

    kind "same": Perl accepts without warnings and yields what we yield.
    kind "croak": Perl dies; we raise ConfigError.
    kind "stricter": Perl accepts (silently losing text, or warning); we raise.  ``perl``
    pins Perl's result and ``warns`` whether it warns, to document the deviation.
    """

    id: str
    files: dict[str, str]
    kind: str = "same"
    perl: dict[str, Any] | None = None
    warns: bool = False
    opts: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case(
        "separators", {"main.conf": "a = 1\nb 2\nc=3\nd\t4\ne =5\nf= 6\n  g   =   7  \nh x = y\n"}
    ),
    Case("spaces", {"main.conf": "k = a  b\tc\nk2 = x = y\nk3 value with = sign\n=lead\n"}),
    Case("vt-ff-whitespace", {"main.conf": "a\x0b=\x0b1\x0b\nb\x0c2\nc \xa0x\nd\xa0e = 1\n"}),
    Case(
        "comments",
        {"main.conf": "# full\n  # indented\na = 1 # t\nb = 2#t\nc = \\#no\nd = a\\#b # c\n"},
    ),
    Case(
        "quotes",
        {
            "main.conf": 'a = "x # y"\nb = "with spaces"\nc = "q"x\nd = x"q"\ne = "a"b"\nf = "\n'
            'g = ""\nh = \\"x\\"\ni = \'single\'\nj = " padded "\nk "quoted key" = v\n'
        },
    ),
    Case(
        "secret-spaces",  # passphrases as Perl's Crypt::CBC gets them: see test_config.py
        {
            "main.conf": 'q = " secret "\nt = "\t tab \t"  \r\nu =   bare secret \t \r\n'
            'v " sep "\nw = "  "\nx = " a " # c\ny = \\" esc \\"\nz = " open\n'
            "s = 'single '\nh <<EOF\n  here  \nEOF\ni = <<EOF\n   ind  \n   EOF\n"
        },
    ),
    Case("escapes", {"main.conf": "a = \\\\\nb = \\$x\nc = a\\\\#b\nd = \\n\\t\ne\\# = 1\n"}),
    Case("empty", {"main.conf": "a =\nb=\nc = \nd = # comment\ne=#x\n"}),
    Case(
        "continuation",
        {"main.conf": "a = 1 \\\n    2 \\\n  3\nb = x\\\ny\nc = z \\\n\nd = 4\ne = 1 \\ # c\n"},
    ),
    Case("continuation-then-comment", {"main.conf": "a = 1 \\\n# comment\nb = 2\\\n/* c */\n"}),
    Case(
        "c-comments",
        {
            "main.conf": "/* one */\na = 1 /* in */ 2\n/*\nb = hidden\n*/\nc = 3\n  /* indented\n"
            "  still */ d = 4\ne = x /* a */ y /* b */ z\nf = v /* open\ng = 1 # /* x */ y\n"
        },
    ),
    Case(
        "heredocs",
        {
            "main.conf": "a <<EOF\nline1\n  line2\nEOF\nb = <<END\n    x\n      y\n  z\n    END\n"
            "c <<E\nE\nd <<EOF\n# not a comment\n/* nor this */\n\\#x\nEOF\n"
            'e <<EOF\n"quoted"\nEOF\nf =<<  T  \n   t\n\t T \n'
        },
    ),
    Case("heredoc-after-continuation", {"main.conf": "a = 1 \\\nb <<EOF\nz\nEOF\nc = 2\n"}),
    Case(
        "blocks",
        {
            "main.conf": "<door ssh>\n  port 22\n  <inner>\n    x = 1\n  </inner>\n</door>\n"
            "<door web>\nport = 80\n</door>\n<plain>\nk v\n</plain>\n"
            '<"quoted name">\nk = v\n</"quoted name">\n<door "my label">\nk=1\n</door>\n'
            "<empty/>\n<lab x/>\n<a   b  >\n</a>\n<c 0>\n</c>\n"
        },
    ),
    Case("mismatched-close-tag", {"main.conf": "<a>\nk=1\n</b>\n"}),
    Case(
        "duplicates",
        {
            "main.conf": "a = 1\na = 2\na = 3\n<b x>\n</b>\n<b x>\nk=1\n</b>\n"
            "<c>\n</c>\n<c>\n</c>\n<d>\nk=1\n</d>\n<d e>\n</d>\n"
        },
    ),
    Case(
        "includes",
        {
            "main.conf": "a = 1\n<<include inc.conf>>\nb = 2\n<<INCLUDE inc2.conf>>\n"
            "<door a>\n<<include body.conf>>\n</door>\n",
            "inc.conf": "x = 1\n<<include inc3.conf>>\n",
            "inc2.conf": "x = 2\n",
            "inc3.conf": "y = 3\n",
            "body.conf": "port = 1\n",
        },
    ),
    Case(
        "block-across-include",
        {"main.conf": "<<include open.conf>>\nk = 1\n</door>\n", "open.conf": "<door x>\n"},
    ),
    Case("include-keyword-is-option", {"main.conf": "include other.conf\n"}),
    Case("crlf", {"main.conf": "a = 1\r\nb = x \\\r\nc = 2\r\nd <<EOF\r\nl1\r\nEOF\r\n"}),
    Case("unicode", {"main.conf": 'name = Grüße 😀\nk = "é"\n'}),
    Case("subdir-relative", {"main.conf": "<<include sub/a.conf>>\n", "sub/a.conf": "x = 1\n"}),
    # Perl dies
    Case("stray-end", {"main.conf": "a = 1\n</x>\n"}, "croak"),
    Case("unclosed", {"main.conf": "<a>\nb = 1\n"}, "croak"),
    Case("missing-include", {"main.conf": "<<include nope.conf>>\n"}, "croak"),
    Case("quoted-include", {"main.conf": '<<include "q.conf">>\n', "q.conf": "k=1\n"}, "croak"),
    Case("url-looks-like-empty-block", {"main.conf": "url = <http://x/>\n"}, "croak"),
    # Perl loses text or warns; we refuse
    Case("bare-key", {"main.conf": "a\n"}, "stricter", {"a": None}),
    Case("key-then-comment", {"main.conf": "k # c\n"}, "stricter", {"k": None}),
    Case("open-heredoc", {"main.conf": "k = 1\na <<EOF\nx\n"}, "stricter", {"k": "1"}),
    Case("open-c-comment", {"main.conf": "k = 1\n/* x\na = 1\n"}, "stricter", {"k": "1"}),
    Case("continuation-at-eof", {"main.conf": "k = 1\na = 1 \\\n"}, "stricter", {"k": "1"}),
    Case("stray-comment-end", {"main.conf": "a = b*/c\n"}, "stricter", {"c": None}, warns=True),
    Case(
        "include-cycle",
        {"main.conf": "k = 1\n<<include b.conf>>\n", "b.conf": "<<include main.conf>>\n"},
        "stricter",
        {"k": "1"},
        warns=True,
    ),
    Case(
        "include-twice",
        {"main.conf": "<<include i.conf>>\n<<include i.conf>>\n", "i.conf": "k = 1\n"},
        "stricter",
        {"k": "1"},
        warns=True,
    ),
]


@pytest.fixture(scope="module")
def perl_results(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[dict[str, Any], Path]]:
    """Run every case through one perl process."""
    root = tmp_path_factory.mktemp("cases")
    jobs = []
    for case in CASES:
        write_files(root / case.id, case.files)
        jobs.append({"file": "main.conf", "cwd": str(root / case.id), "opts": case.opts})
    results = run_perl(jobs)
    return {c.id: (r, root / c.id) for c, r in zip(CASES, results, strict=True)}


@needs_perl
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_differential_against_perl(
    case: Case, perl_results: dict[str, tuple[dict[str, Any], Path]]
) -> None:
    perl, root = perl_results[case.id]
    ours: dict[str, Any] | ConfigError
    try:
        ours = perl_view(read_general(root / "main.conf"))
    except ConfigError as exc:
        ours = exc
    if case.kind == "same":
        assert perl["error"] is None and perl["warnings"] == []
        assert ours == perl["config"]
    elif case.kind == "croak":
        assert perl["error"] is not None
        assert isinstance(ours, ConfigError) and ours.source and ours.line
    else:
        assert perl["error"] is None and bool(perl["warnings"]) == case.warns
        assert perl["config"] == case.perl
        assert isinstance(ours, ConfigError) and ours.source and ours.line


@needs_perl
def test_include_relative_matches_perl_include_relative(tmp_path: Path) -> None:
    # Our deliberate deviation: includes resolve like Perl's -IncludeRelative => 1, not the cwd.
    write_files(
        tmp_path,
        {
            "main.conf": "<<include sub/a.conf>>\n",
            "sub/a.conf": "x = 1\n<<include b.conf>>\n",
            "sub/b.conf": "y = right\n",
            "b.conf": "y = wrong\n",
        },
    )
    elsewhere = tmp_path / "sub"
    main = str(tmp_path / "main.conf")
    default, relative = run_perl(
        [
            {"file": main, "cwd": str(tmp_path), "opts": {}},
            {"file": main, "cwd": str(elsewhere), "opts": {"-IncludeRelative": 1}},
        ]
    )
    ours = perl_view(read_general(main))
    assert ours == relative["config"] == {"x": "1", "y": "right"}
    assert default["config"] == {"x": "1", "y": "wrong"}


# Flat files: keys, values with spaces, comments, escaped '#', continuations, quotes, C comments.
_KEY = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,6}", fullmatch=True)
_SEP = st.sampled_from([" = ", "=", " ", "\t", " =", "= ", " \t=  "])
_CHAR = st.sampled_from([*"abz09 .:/-_,=\t\"'#\\$", "\\#", "é", "\xa0", "\x0b", "\r"])
_VALUE = st.lists(_CHAR, max_size=10).map("".join)
_TAIL = st.sampled_from(["", " # note", "#x", " /* c */", " \\#", '"'])


@st.composite
def _option(draw: st.DrawFn) -> list[str]:
    lines = [draw(_KEY) + draw(_SEP) + draw(_VALUE) + draw(_TAIL)]
    for _ in range(draw(st.integers(0, 2))):  # continuation lines
        lines[-1] += draw(st.sampled_from(["\\", " \\"]))
        lines.append(draw(st.sampled_from(["", "  ", "\t"])) + draw(_VALUE) + draw(_TAIL))
    return lines


_LINES = st.one_of(
    _option(),
    _option(),
    st.just(["# a comment"]),
    st.just(["   # indented = comment"]),
    st.just([""]),
    st.just(["/* c-comment */"]),
    st.just(["/* multi", "hidden = 1", "  end */"]),
).map(lambda ls: "\n".join(ls))


_FILES = st.lists(
    st.lists(_LINES, max_size=8).map(lambda ls: "".join(s + "\n" for s in [*ls, "zz = end"])),
    min_size=1,
    max_size=8,
)


def _has_null(config: Any, key: str) -> bool:
    value = config.get(key)
    return value is None or (isinstance(value, list) and None in value)


@needs_perl
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=_FILES)
def test_differential_property(texts: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        jobs: list[dict[str, Any]] = []
        for i, text in enumerate(texts):
            write_files(Path(tmp), {f"{i}.conf": text})
            jobs.append({"file": os.path.join(tmp, f"{i}.conf"), "cwd": tmp, "opts": {}})
        results = run_perl(jobs)
        for job, perl in zip(jobs, results, strict=True):
            assert perl["error"] is None and perl["warnings"] == [], perl
            try:
                ours = perl_view(read_general(job["file"]))
            except ConfigError as exc:  # only a value-less option, which Perl stores as undef
                assert "no value" in exc.message and exc.key is not None
                assert _has_null(perl["config"], exc.key), (exc, perl["config"])
                continue
            assert ours == perl["config"]


# ------------------------------------- the line rules, held to Config::General's regexes

# The module's own regexes, as Python's ``re`` runs them (the oracle: exact but, on some
# lines, cubic). ``perlrules`` must give what each gives, on any line.
_A = re.ASCII
ORACLE = {
    "one_line_comment": re.compile(r"\s*/\*.*\*/\s*", _A),
    "comment_start": re.compile(r"\s*/\*", _A),
    "comment_start_closed": re.compile(r"\*/\s*$", _A),
    "comment_end": re.compile(r"^.*\*/", _A),
    "hash": re.compile(r"(?<!\\)#.*$", _A),
    "empty_block": re.compile(r"\s*<([^/]+?.*?)/>\s*$", _A),
    "heredoc_eq": re.compile(r"\s*([^=]+?)\s*=\s*<<\s*(.+?)\s*$", _A),
    "heredoc_ws": re.compile(r"\s*(\S+?)\s+<<\s*(.+?)\s*$", _A),
    "include_quoted": re.compile(r"""\s*<<include\s+(["'])(.+?)>>\\s*$""", _A | re.I),
    "include": re.compile(r"\s*<<include\s+(.+?)>>\s*$", _A | re.I),
    "split": re.compile(r"\s*=\s*|\s+", _A),
    "block_start": re.compile(r"<([^/]+?.*?)>$", _A),
    "block_end": re.compile(r"</(.+?)>$", _A),
    "block_quoted": re.compile(r'"([^"]+)"$', _A),
    "block_name": re.compile(r'(?:"([^"]+)"|(\S+))(?:\s+(?:"([^"]+)"|(.*)))?$', _A),
}
# What the rules look for, and what confuses them: whitespace (ASCII and not), the
# ASCII-only case folding of "include" (the Kelvin sign folds to k only in Unicode).
_PIECES = st.sampled_from(
    [" ", " ", "\t", "\r", "\x0b", "\xa0", "<", ">", "/", "*", "=", "#", "\\", '"', "'",
     "s", "S", "a", "E", "0", "é", "\u212a", "<<", "/*", "*/", "/>", ">>", "<<include",
     "<<INCLUDE", "<<inc\u212aude", ">>\\s", "EOF", "</"]
)  # fmt: skip
_ANY = st.lists(_PIECES, max_size=14).map("".join)
_GAP = st.sampled_from(["", " ", "  ", "\t", " \t ", "\xa0"])
# Lines shaped like what the rules look for, so that each matches often.
_INCLUDES = st.tuples(
    _GAP, st.sampled_from(["<<include", "<<Include", "<<INCLUDE", "<<inc\u212aude", "<<includ"]),
    _GAP, st.sampled_from(["", '"', "'"]), _ANY,
    st.sampled_from([">>", ">>\\", ">>\\s", ">>\\sS", ">>>", ">", ""]), _GAP,
).map("".join)  # fmt: skip
_BLOCKS = st.tuples(
    _GAP, st.sampled_from(["<", "</", '<"', "< ", '"', ""]), _ANY, _GAP,
    st.sampled_from(['" "', " ", ""]), _ANY, st.sampled_from([">", "/>", '">', '"', ""]), _GAP,
).map("".join)  # fmt: skip
_HEREDOCS = st.tuples(
    _GAP, _ANY, _GAP, st.sampled_from(["=", ""]), _GAP, st.sampled_from(["<<", "<"]), _GAP,
    _ANY, _GAP,
).map("".join)  # fmt: skip
_LINE = _ANY | _INCLUDES | _BLOCKS | _HEREDOCS | _ANY.map(lambda a: f'"{a}"')


def _groups(m: re.Match[str] | None) -> tuple[str | None, ...] | None:
    return None if m is None else m.groups()


@settings(max_examples=3000, deadline=None)
@given(_LINE)
def test_line_rules_match_the_regexes(line: str) -> None:
    o = ORACLE
    m = o["one_line_comment"].search(line)
    assert rules.strip_one_line_comment(line) == (
        o["one_line_comment"].sub("", line, 1) if m else None
    )
    assert rules.starts_comment(line) == bool(o["comment_start"].match(line))
    assert rules.ends_with_comment_end(line) == bool(o["comment_start_closed"].search(line))
    assert rules.after_comment_end(line) == o["comment_end"].sub("", line, count=1)
    assert rules.strip_hash_comment(line) == o["hash"].sub("", line, count=1)
    m = o["empty_block"].search(line)
    assert rules.empty_block(line) == (m[1] if m else None)
    assert rules.heredoc_with_equals(line) == _groups(o["heredoc_eq"].match(line))
    assert rules.heredoc_with_space(line) == _groups(o["heredoc_ws"].match(line))
    m = o["include_quoted"].match(line)
    assert rules.include_quoted(line) == (m[2] if m else None)
    m = o["include"].match(line)
    assert rules.include(line) == (m[1] if m else None)
    assert rules.first_word(line) == re.sub(r"\s\s*.*$", "", line, count=1, flags=_A)
    text = line.strip(rules.WS)
    assert rules.split_option(text) == o["split"].split(text, maxsplit=1)
    m = o["block_start"].match(text)
    assert rules.block_start(text) == (m[1] if m else None)
    assert rules.block_end(text) == bool(o["block_end"].match(text))
    assert rules.only_quoted(line) == bool(o["block_quoted"].match(line))
    assert rules.block_name(line) == _groups(o["block_name"].match(line))


@settings(max_examples=1000, deadline=None)
@given(_LINE, st.sampled_from(["EOF", " ", "\t", "E O", "<<", "s"]))
def test_heredoc_terminator_matches_the_regex(line: str, end: str) -> None:
    m = re.match(r"(\s*)" + re.escape(end) + r"\s*$", line, _A)
    assert rules.heredoc_terminator(line, end) == (m[1] if m else None)


@pytest.mark.parametrize(
    "line",
    ["<" * 20000, " " * 20000, " " * 20000 + "x", "a" + " " * 20000 + "<<", "<" + "x" * 20000,
     "<<include " + " " * 20000, "<<include " + ">>" * 10000, " " * 20000 + "/*",
     "a /*" + " " * 20000, "a" + " <<" * 7000, '<a' + ' "' * 10000 + ">", "</" + ">" * 20000,
     "<a/" + "/>" * 10000 + "x", 'a "' + '\\"' * 10000, "a" + " =" * 10000, "/*" + "*" * 20000],
    ids=range(16),
)  # fmt: skip
def test_long_pathological_lines_are_read_at_once(line: str) -> None:
    """Issue 12, point 12: 2,000 ``<`` took 11.7 s and 4,000 spaces 17.7 s. These are
    ten times longer; together they take milliseconds (no timing here: a test that a
    slow machine fails is no test -- benchmarks/bench_lines.py measures it)."""
    try:
        parse_general(line + "\n" + line + " = 1\n")
    except ConfigError as exc:  # one short line, even with a 20 kB "key" in it
        assert "\n" not in str(exc) and len(str(exc)) < 300, str(exc)[:400]


def test_error_shows_a_hostile_key_short_and_printable() -> None:
    with pytest.raises(ConfigError) as info:
        parse_general("a\x1b[2J\n")
    message = "has no value (expected 'key value' or 'key = value')"
    assert str(info.value) == f"<string>:1: a\\x1b[2J: {message}"
    assert info.value.key == "a\x1b[2J"  # the key itself is kept whole
