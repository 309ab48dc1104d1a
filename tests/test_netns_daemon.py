"""The proof of issue 4: ``aioknock run`` in a client namespace opens a door that
``aioknock daemon`` (a real process, nftables backend) guards in a server namespace.

The server's own ruleset (``table inet filter``) holds the two documented user rules,
then drops the protected port and the knock ports. A listener answers on the protected
port. Before the knock a connection fails; after ``aioknock run`` it succeeds; after
``duration`` a new connection fails again -- in network mode (AF_PACKET capture) and
in file mode (nftables ``log`` lines from the kernel log, copied into a file the daemon
follows), with an encrypted knock and with a knockd-style sequence door.

Safety: packets only go to addresses inside the namespaces created here.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.daemons import DURATION, KEY, SPAN, Daemon, daemon_conf, daemon_env
from helpers.netns import (
    CONNECT,
    LISTENER,
    WAIT_LIMIT,
    NetnsPair,
    check_closing,
    check_root,
    requires_root,
    watch_closing,
)

from aioknock.daemon import nftables

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PROTECTED = 22
DOOR4 = "198.18.0.1 . tcp . 22"  # the client's door in the daemon's set
_serial = itertools.count()

# Copies the kernel's log records that carry our prefix into a kern.log-like file,
# from the end of /dev/kmsg on; bounded by a deadline (and killed by the harness).
KMSG_COPIER = textwrap.dedent(
    """
    import errno, os, select, sys, time
    path, prefix, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(fd, 0, os.SEEK_END)
    deadline = time.monotonic() + limit
    print("ready", flush=True)
    with open(path, "a", buffering=1) as out:
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([fd], [], [], min(left, 0.5))[0]:
                continue
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten: go on
                    continue
                raise
            text = record.decode(errors="replace").split(";", 1)[-1].split("\\n", 1)[0]
            if text.startswith(prefix):
                out.write("Jan  1 00:00:00 server kernel: " + text + "\\n")
    """
)


def user_ruleset(*, log_prefix: str = "", doors: bool = False) -> str:
    """The user's table: the two documented rules, then drops (and optionally log)."""
    rules = [*nftables.user_rules()]
    span = SPAN
    if log_prefix:
        syn = "tcp flags & (syn | ack) == syn"
        rules.append(f'tcp dport {span} {syn} log prefix "{log_prefix}" level info')
    rules.append(f"tcp dport {PROTECTED} counter drop")
    rules.append(f"tcp dport {span} drop")
    if doors:
        if log_prefix:
            rules.append(f'tcp dport {{ 7000, 9000 }} {syn} log prefix "{log_prefix}" level info')
            rules.append(f'udp dport 8000 log prefix "{log_prefix}" level info')
        rules += ["tcp dport { 7000, 9000 } drop", "udp dport 8000 drop"]
    body = "\n".join(f"    {r}" for r in rules)
    return (
        "table inet filter {\n  chain input {\n"
        "    type filter hook input priority filter; policy accept;\n"
        f"{body}\n  }}\n}}\n"
    )


def knock(pair: NetnsPair, tmp: Path, *args: str, key: str = KEY) -> None:
    """``aioknock run`` in the client namespace (the key in a file of its own)."""
    keyfile = tmp / "client.key"
    keyfile.write_text(key + "\n")
    keyfile.chmod(0o600)
    cmd = [PY, "-m", "aioknock", "run", "-remote", pair.server_ip, "-timeout", "0.01", *args]
    if "-sequence" not in args:
        cmd += ["-port", str(PROTECTED), "-encrypt", "-cipher", "Blowfish", "-iv",
                "-key_file", str(keyfile), "-portspan", SPAN]  # fmt: skip
    env = daemon_env(tmp)
    res = subprocess.run(
        ["ip", "netns", "exec", pair.client, *cmd],
        capture_output=True, text=True, timeout=15, env=env, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr


def reach(pair: NetnsPair, timeout: float = 0.5) -> bool:
    res = pair.run(
        pair.client, [PY, "-c", CONNECT, pair.server_ip, str(PROTECTED), str(timeout)],
        timeout=timeout + 30,
    )  # fmt: skip
    return res.stdout.startswith("ok")


def poll_reach(pair: NetnsPair, want: bool, within: float) -> float | None:
    """Seconds until ``reach`` answered ``want`` (None if it never did within ``within``)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if reach(pair, 0.4) == want:
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def elements(pair: NetnsPair) -> str:
    return pair.run(pair.server, ["nft", "list", "set", "inet", "aioknock", "allow4"]).stdout


def wait_element(pair: NetnsPair, element: str = DOOR4) -> tuple[str, float]:
    """The set's listing once it holds ``element`` (the daemon logs its verdict, then
    runs nft), and the ``time.monotonic()`` by which it did."""
    deadline = time.monotonic() + WAIT_LIMIT
    while element not in (listing := elements(pair)):
        assert time.monotonic() < deadline, f"no {element} within {WAIT_LIMIT} s: {listing}"
        time.sleep(0.02)
    return listing, time.monotonic()


def prepare(pair: NetnsPair, *, log_prefix: str = "", doors: bool = False) -> None:
    """The user's ruleset and the protected service in the server namespace."""
    ruleset = user_ruleset(log_prefix=log_prefix, doors=doors)
    pair.run(pair.server, ["nft", "-f", "-"], input=ruleset)
    pair.popen(pair.server, [PY, "-c", LISTENER, str(PROTECTED), "60"])
    pair.wait_port(PROTECTED)


def assert_opens_then_closes(pair: NetnsPair, daemon: Daemon, knocked: float) -> None:
    """Open now (for the knocking client) and closed again once ``duration`` passed
    (``knocked``: ``time.monotonic()`` before the knock began)."""
    daemon.wait_log(r"accepted knock from 198\.18\.0\.1 \(\w+\): opening tcp/22 for 198\.18\.0\.1")
    _, seen = wait_element(pair)
    assert poll_reach(pair, True, 3.0) is not None, daemon.stderr
    closing = watch_closing(lambda: reach(pair, 0.4), DURATION + 10.0)
    check_closing(closing, DURATION, added_after=knocked, added_by=seen)


@requires_root
def test_network_mode_encrypted_knock_opens_then_closes(pair: NetnsPair, tmp_path: Path) -> None:
    prepare(pair)
    daemon = Daemon(pair, tmp_path, daemon_conf(tmp_path, interface=pair.server_if))
    daemon.wait_log(r"capturing on veth-s")
    assert not reach(pair), "the protected port answered before any knock"
    knocked = time.monotonic()
    knock(pair, tmp_path)
    assert_opens_then_closes(pair, daemon, knocked)
    assert daemon.terminate() == 0, daemon.stderr
    assert "Traceback" not in daemon.stderr
    assert re.search(r"stopped: \d+ packets, 1 accepted, 0 refused", daemon.stderr), daemon.stderr


@pytest.fixture
def kernel_log_all_netns() -> Iterator[None]:
    """nftables ``log`` in a namespace reaches the kernel log only with this sysctl."""
    check_root()
    name = "net.netfilter.nf_log_all_netns"
    old = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, check=True)
    subprocess.run(["sysctl", "-qw", f"{name}=1"], check=True)
    try:
        yield
    finally:
        subprocess.run(["sysctl", "-qw", f"{name}={old.stdout.strip()}"], check=True)


def kernel_log_file(pair: NetnsPair, tmp_path: Path, *, doors: bool = False) -> Path:
    """The user's ruleset logging the knock ports, and a kern.log of those lines alone."""
    prefix = f"akt{os.getpid()}x{next(_serial)}: "  # ours alone among the host's log lines
    prepare(pair, log_prefix=prefix, doors=doors)
    logfile = tmp_path / "kern.log"
    logfile.touch()
    copier = pair.popen(
        pair.server, [PY, "-c", KMSG_COPIER, str(logfile), prefix, "30"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert copier.stdout is not None and copier.stdout.readline().strip() == "ready"
    return logfile


@requires_root
def test_file_mode_nftables_log_lines(
    pair: NetnsPair, tmp_path: Path, kernel_log_all_netns: None
) -> None:
    logfile = kernel_log_file(pair, tmp_path)
    conf = daemon_conf(
        tmp_path, runmode="file", logfile=str(logfile), log_format="kernel", from_start="yes"
    )
    daemon = Daemon(pair, tmp_path, conf)
    daemon.wait_log(r"following .*kern\.log")
    assert not reach(pair)
    knocked = time.monotonic()
    knock(pair, tmp_path)
    assert_opens_then_closes(pair, daemon, knocked)
    lines = logfile.read_text().splitlines()
    assert len(lines) >= 32, lines  # one per knock port (Blowfish, RandomIV: 32 ports)
    assert all("SRC=198.18.0.1 DST=198.18.0.2" in line for line in lines), lines[:3]
    assert daemon.terminate() == 0, daemon.stderr


@requires_root
def test_file_mode_reads_the_kernel_log_directly(
    pair: NetnsPair, tmp_path: Path, kernel_log_all_netns: None
) -> None:
    """``logfile = /dev/kmsg``: no rsyslog, no journald, no copy in between."""
    prefix = f"akt{os.getpid()}x{next(_serial)}: "
    prepare(pair, log_prefix=prefix)
    conf = daemon_conf(tmp_path, runmode="file", logfile="/dev/kmsg", log_format="kernel",
                       log_prefix=f'"{prefix}"')  # fmt: skip
    daemon = Daemon(pair, tmp_path, conf)
    daemon.wait_log(r"reading the kernel log /dev/kmsg")
    assert not reach(pair)
    knocked = time.monotonic()
    knock(pair, tmp_path)
    assert_opens_then_closes(pair, daemon, knocked)
    assert daemon.terminate() == 0, daemon.stderr
    assert re.search(r"stopped: \d+ packets, 1 accepted, 0 refused", daemon.stderr), daemon.stderr


DOOR = "<door ssh>\n  sequence = 7000,8000:udp,9000\n  port = 22\n  proto = tcp\n</door>\n"


@requires_root
@pytest.mark.parametrize("runmode", ["network", "file"])
def test_sequence_door(
    pair: NetnsPair, tmp_path: Path, request: pytest.FixtureRequest, runmode: str
) -> None:
    if runmode == "file":
        request.getfixturevalue("kernel_log_all_netns")
        logfile = kernel_log_file(pair, tmp_path, doors=True)
        conf = daemon_conf(tmp_path, runmode="file", logfile=str(logfile), log_format="kernel",
                           from_start="yes", encoded="no")  # fmt: skip
        ready = r"following .*kern\.log"
    else:
        prepare(pair, doors=True)
        conf = daemon_conf(tmp_path, interface=pair.server_if, encoded="no")
        ready = r"capturing on veth-s"
    daemon = Daemon(pair, tmp_path, conf + DOOR)
    daemon.wait_log(ready)
    assert not reach(pair)
    knocked = time.monotonic()
    knock(pair, tmp_path, "-sequence", "7000,8000:udp,9000")
    daemon.wait_log(r"accepted knock from 198\.18\.0\.1 \(ssh\)")
    assert_opens_then_closes(pair, daemon, knocked)
    if runmode == "file":
        text = logfile.read_text()
        assert "PROTO=UDP" in text and "DPT=8000" in text, text
    assert daemon.terminate() == 0, daemon.stderr


@requires_root
def test_wrong_key_opens_nothing(pair: NetnsPair, tmp_path: Path) -> None:
    prepare(pair)
    daemon = Daemon(pair, tmp_path, daemon_conf(tmp_path, interface=pair.server_if))
    daemon.wait_log(r"capturing on veth-s")
    knock(pair, tmp_path, key="not the key")
    daemon.wait_log(r"warning: refused knock from 198\.18\.0\.1: ")
    assert not reach(pair, 0.5)
    assert "198.18.0.1" not in elements(pair)
    assert "accepted" not in daemon.stderr
    assert daemon.terminate() == 0, daemon.stderr


@requires_root
def test_sigterm_leaves_open_doors_to_their_timeout(pair: NetnsPair, tmp_path: Path) -> None:
    prepare(pair)
    duration = 6  # outlasts the daemon's exit, a listing and a connection, however slow
    conf = daemon_conf(tmp_path, interface=pair.server_if, duration=str(duration))
    daemon = Daemon(pair, tmp_path, conf)
    daemon.wait_log(r"capturing on veth-s")
    knocked = time.monotonic()
    knock(pair, tmp_path)
    daemon.wait_log(r"accepted knock from 198\.18\.0\.1")
    assert daemon.terminate() == 0, daemon.stderr
    assert "stopped:" in daemon.stderr and "Traceback" not in daemon.stderr
    listing = elements(pair)  # the stop waited for the queued nft
    seen = time.monotonic()
    assert re.search(r"198\.18\.0\.1 \. tcp \. 22 timeout \S+ expires", listing), listing
    assert poll_reach(pair, True, 5.0) is not None, "the door closed with the daemon"
    closing = watch_closing(lambda: reach(pair, 0.4), duration + 10.0)
    check_closing(closing, duration, added_after=knocked, added_by=seen)
    assert "198.18.0.1" not in elements(pair)


@requires_root
def test_failed_reload_keeps_the_old_configuration(pair: NetnsPair, tmp_path: Path) -> None:
    """SIGHUP with a configuration that cannot work: the daemon goes on exactly as before."""
    prepare(pair)
    daemon = Daemon(pair, tmp_path, daemon_conf(tmp_path, interface=pair.server_if))
    daemon.wait_log(r"capturing on veth-s")
    daemon.conf.write_text(daemon_conf(tmp_path, interface=pair.server_if, encoded="no",
                                       duration="7"))  # fmt: skip
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log(r"error: reload failed, keeping the old configuration: .*encoded")
    # One that loads but whose firewall set-up fails (nft cannot take that table name).
    daemon.conf.write_text(daemon_conf(tmp_path, interface=pair.server_if, nft_table="accept",
                                       duration="7"))  # fmt: skip
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log(r"error: reload failed, keeping the old configuration: nft_table: ")
    knocked = time.monotonic()
    knock(pair, tmp_path)
    daemon.wait_log(r"accepted knock from 198\.18\.0\.1 \(knock\): opening tcp/22 for "
                    rf"198\.18\.0\.1 for {DURATION} s")  # fmt: skip
    listing, _ = wait_element(pair)
    assert f"{DOOR4} timeout {DURATION}s" in listing, listing
    assert_opens_then_closes(pair, daemon, knocked)
    assert daemon.terminate() == 0, daemon.stderr


@requires_root
def test_command_backend_repeated_knock_after_reload_does_not_stack(
    pair: NetnsPair, tmp_path: Path
) -> None:
    """backend = command with rules that stack (as iptables -I does): a knock within the
    window extends the door, also after a SIGHUP; close runs once, after ``duration``."""
    prepare(pair)
    table = "inet filter"
    pair.run(pair.server, ["nft", "-f", "-"], input=(
        f"add chain {table} doors\ninsert rule {table} input jump doors\n"
    ))  # fmt: skip
    duration = 8  # outlasts a connection, a reload and a second aioknock run, however slow
    conf = daemon_conf(
        tmp_path, interface=pair.server_if, backend="command", duration=str(duration),
        open=f"nft add rule {table} doors ip saddr %IP% tcp dport %PORT% accept",
        close=f"nft flush chain {table} doors",
    )  # fmt: skip
    daemon = Daemon(pair, tmp_path, conf)
    daemon.wait_log(r"capturing on veth-s")

    def door_rules() -> int:
        chain = pair.run(pair.server, ["nft", "list", "chain", *table.split(), "doors"]).stdout
        return chain.count("ip saddr 198.18.0.1 tcp dport 22 accept")

    assert not reach(pair)
    knock(pair, tmp_path)
    daemon.wait_log(r"opening tcp/22 for 198\.18\.0\.1")
    assert poll_reach(pair, True, 5.0) is not None, daemon.stderr
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log(r"configuration reloaded")
    daemon.wait_log(r"capturing on veth-s(.|\n)*capturing on veth-s")
    again = time.monotonic()
    knock(pair, tmp_path)
    daemon.wait_log(r"extending tcp/22 for 198\.18\.0\.1")
    extended = time.monotonic()
    assert door_rules() == 1, daemon.stderr
    # Closed by the daemon's timer: no sooner than a duration after the second knock (not
    # the first), at most 3 s later (its timer, then the close command).
    closing = watch_closing(lambda: reach(pair, 0.4), duration + 10.0)
    check_closing(closing, duration, added_after=again, added_by=extended, slack=3.0)
    assert door_rules() == 0
    daemon.wait_log(r"closing tcp/22 for 198\.18\.0\.1")
    assert "could not" not in daemon.stderr, daemon.stderr
    assert daemon.terminate() == 0, daemon.stderr


@requires_root
def test_network_mode_ignores_knocks_for_other_hosts(pair: NetnsPair, tmp_path: Path) -> None:
    """A gateway sees knocks for the hosts behind it: they open nothing here."""
    prepare(pair)
    behind = "198.19.99.99"  # routed through the server namespace, not one of its addresses
    pair.run(pair.client, ["ip", "route", "add", f"{behind}/32", "via", pair.server_ip])
    daemon = Daemon(pair, tmp_path, daemon_conf(tmp_path, interface=pair.server_if) +
                    "debug = 1\n")  # fmt: skip
    daemon.wait_log(r"capturing on veth-s")
    knock(pair, tmp_path, "-remote", behind, "-client", "198.18.0.1")
    daemon.wait_log(r"ignored \d+ packets not addressed to this host")
    time.sleep(0.5)
    assert "accepted" not in daemon.stderr
    assert "198.18.0.1" not in elements(pair)
    knock(pair, tmp_path)  # to the server itself: opens as always
    daemon.wait_log(r"accepted knock from 198\.18\.0\.1")
    assert daemon.terminate() == 0, daemon.stderr
