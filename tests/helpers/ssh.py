"""OpenSSH for the namespace tests: a throwaway user key, an ``sshd`` of its own (config,
host key, authorized keys and pid file in a temporary folder) in the server namespace,
and the ``ssh`` command line that logs in through ``aioknock connect``.

Nothing here touches the host's ssh: sshd runs only inside a namespace (``NetnsPair.popen``
stops it), with ``-f`` its own config; the client reads no config (``-F /dev/null``) and
keeps known hosts in the temporary folder. The one thing outside it is sshd's
privilege-separation folder ``/run/sshd`` (empty; Debian's service makes it at start),
made if missing and removed again if this made it.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .daemons import PY
from .netns import WAIT_LIMIT, NetnsPair, _teardown, _wait_link_ready, ns_run

SSHD = "/usr/sbin/sshd"  # by its full path: sshd re-executes itself
PRIVSEP = Path("/run/sshd")


@contextlib.contextmanager
def another_server(pair: NetnsPair, n: int) -> Iterator[NetnsPair]:
    """One more server namespace, ``aks-...-n``, joined to ``pair``'s client namespace by
    its own veth pair (``veth-cN`` there, ``veth-s`` here): client 198.18.N.1, server
    198.18.N.2 (N = 1..254). Returned as a NetnsPair whose ``client`` is ``pair.client``;
    on exit its processes are stopped and its namespace (with the veth pair) deleted,
    the client namespace is left to ``pair``."""
    if not 0 < n < 255:
        raise ValueError(f"n must be 1-254, not {n}")
    other = NetnsPair(pair.client, f"{pair.server}-{n}", f"198.18.{n}.1", f"198.18.{n}.2",
                      client_if=f"veth-c{n}", server_if="veth-s")  # fmt: skip
    created: list[str] = []
    try:
        subprocess.run(["ip", "netns", "add", other.server], check=True, timeout=10)
        created.append(other.server)
        # Distinct ifindexes (see netns_pair): the link is up at once.
        ns_run(pair.client, ["ip", "link", "add", other.client_if, "index", str(20 + 2 * n),
                             "type", "veth", "peer", "name", other.server_if,
                             "index", str(21 + 2 * n), "netns", other.server])  # fmt: skip
        for ns, dev, address in ((other.client, other.client_if, other.client_ip),
                                 (other.server, other.server_if, other.server_ip)):  # fmt: skip
            ns_run(ns, ["ip", "addr", "add", f"{address}/24", "dev", dev])
            ns_run(ns, ["ip", "link", "set", dev, "up"])
        ns_run(other.server, ["ip", "link", "set", "lo", "up"])
        for ns, dev in ((other.client, other.client_if), (other.server, other.server_if)):
            _wait_link_ready(ns, dev)
        yield other
    finally:
        _teardown(other, created)  # only the namespace made here


def user_key(tmp: Path) -> Path:
    """A new ed25519 key without a passphrase; returns the private key's path."""
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "aioknock-test",
                    "-f", str(key)], check=True, timeout=10)  # fmt: skip
    return key


@contextlib.contextmanager
def privsep_dir() -> Iterator[None]:
    """``/run/sshd``, which sshd refuses to start without, for the duration."""
    made = not PRIVSEP.exists()
    if made:
        PRIVSEP.mkdir(mode=0o755)
    try:
        yield
    finally:
        if made:
            with contextlib.suppress(OSError):
                PRIVSEP.rmdir()


@dataclass
class Sshd:
    """One ``sshd -D -e`` in the server namespace on ``address`` port ``port``, letting
    root in with ``key`` (and nothing else: no passwords, no PAM)."""

    pair: NetnsPair
    tmp: Path
    key: Path
    address: str
    port: int = 22

    def __post_init__(self) -> None:
        self.dir = self.tmp / f"sshd-{self.address}-{self.port}"
        self.dir.mkdir()
        host_key = self.dir / "host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                       check=True, timeout=10)  # fmt: skip
        authorized = self.dir / "authorized_keys"
        authorized.write_text(Path(f"{self.key}.pub").read_text())
        listen = f"[{self.address}]" if ":" in self.address else self.address
        self.conf = self.dir / "sshd_config"
        self.conf.write_text(
            f"ListenAddress {listen}:{self.port}\n"
            f"HostKey {host_key}\n"
            f"PidFile {self.dir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {authorized}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nPrintMotd no\nPrintLastLog no\nUseDNS no\n"
            "Subsystem sftp internal-sftp\n"
        )
        self.log = self.dir / "sshd.stderr"
        with open(self.log, "wb") as err:
            self.proc = self.pair.popen(
                self.pair.server, [SSHD, "-D", "-e", "-f", str(self.conf)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        self.wait_log(f"Server listening on {self.address} port {self.port}")

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = WAIT_LIMIT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            if self.proc.poll() is not None:
                raise AssertionError(f"sshd exited {self.proc.returncode}: {self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} from sshd within {timeout} s: {self.stderr}")
            time.sleep(0.02)


def proxy_command(conf: Path) -> str:
    """ssh's ProxyCommand: ``aioknock connect`` from this tree with its own config file."""
    return f"{PY} -m aioknock connect -conf {conf} %h %p"


def ssh_options(
    tmp: Path, key: Path, proxy: str | None, *, connect_timeout: float = 10
) -> list[str]:
    """What every ssh and scp here is given: no config file, this key only, no questions,
    known hosts in ``tmp``; ``proxy``: the ProxyCommand (None: a direct connection).
    (ssh keeps the first value given for an option: add none of these again.)"""
    options = ["-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
               "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", f"UserKnownHostsFile={tmp / 'known_hosts'}",
               "-o", f"ConnectTimeout={connect_timeout:g}", "-o", "LogLevel=ERROR"]  # fmt: skip
    if proxy is not None:
        options += ["-o", f"ProxyCommand={proxy}"]
    return options


def ssh_argv(
    tmp: Path, key: Path, proxy: str | None, address: str, port: int, command: Sequence[str]
) -> list[str]:
    """``ssh ... -p PORT root@ADDRESS COMMAND``."""
    return ["ssh", *ssh_options(tmp, key, proxy), "-p", str(port), f"root@{address}", *command]
