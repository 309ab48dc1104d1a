"""The proof of ``aioknock connect`` (issue 11): the real OpenSSH client logs in through
``-o ProxyCommand='aioknock connect %h %p'`` to a real sshd in a server namespace, behind
an nftables DROP of its port that ``aioknock daemon`` opens; 50 MB go up by scp and come
back by ssh intact; without a valid knock the same ssh fails with aioknock's one-line
reason; and Ansible's ``ping`` reaches three such servers through the ProxyCommand given
in its inventory.

Safety: packets only go to addresses inside the namespaces created here; sshd runs only
inside them, with its own config, host key and pid file in the test's folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.daemons import KEY, PY, SPAN, Daemon, daemon_conf, daemon_env
from helpers.netns import NetnsPair, requires_root
from helpers.ssh import (
    Sshd,
    another_server,
    privsep_dir,
    proxy_command,
    ssh_argv,
    ssh_options,
    user_key,
)

from aioknock.daemon import nftables

BIG = 50 * 1024 * 1024
ANSIBLE = shutil.which("ansible", path=os.path.dirname(PY)) or "ansible"


def user_ruleset(ports: list[int]) -> str:
    """The server's own table: the two documented rules, then DROP for sshd's ports and
    the knock's span (a knock's SYNs get no answer, as behind a real firewall)."""
    rules = [*nftables.user_rules(), f"tcp dport {{ {', '.join(map(str, ports))} }} counter drop",
             f"tcp dport {SPAN} drop"]  # fmt: skip
    body = "".join(f"    {rule}\n" for rule in rules)
    head = "    type filter hook input priority filter; policy accept;\n"
    return f"table inet filter {{\n  chain input {{\n{head}{body}  }}\n}}\n"


def client_conf(
    tmp: Path, key: str = KEY, name: str = "knockclient.conf", blocks: str = "", **extra: str
) -> Path:
    """The client's side of daemon_conf's knock (Blowfish, its key in a file beside it);
    ``blocks``: ``<host>`` blocks after the top level. ``verify_timeout`` 10: a loaded
    machine's daemon may take seconds to open (a wrong knock's test gives its own)."""
    keyfile = tmp / f"{name}.key"
    keyfile.write_text(key + "\n")
    keyfile.chmod(0o600)
    settings = {"knock": "CLIENT,PORT,RAND,THISMINUTE,CHECKSUM", "portspan": SPAN,
                "encrypt": "yes", "cipher": "Blowfish", "iv": "yes", "key_file": keyfile.name,
                "timeout": "0.01", "verify_timeout": "10", **extra}  # fmt: skip
    conf = tmp / name
    conf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()) + blocks)
    return conf


@dataclass
class Server:
    """One server namespace: its ruleset, aioknock daemon and sshd(s)."""

    pair: NetnsPair
    daemon: Daemon
    sshds: list[Sshd]

    def opened(self) -> str:
        return self.pair.run(self.pair.server, ["nft", "list", "set", "inet", "aioknock",
                                                "allow4"]).stdout  # fmt: skip


def serve(pair: NetnsPair, tmp: Path, key: Path, ports: list[int], door: str = "") -> Server:
    """DROP ``ports``, start the daemon (capture on the server's veth, nftables doors that
    stay open 30 s; ``door``: a ``<door>`` block instead of encoded knocks) and one sshd
    per port on the server's address."""
    tmp.mkdir(exist_ok=True)
    pair.run(pair.server, ["nft", "-f", "-"], input=user_ruleset(ports))
    if door:
        conf = daemon_conf(tmp, interface=pair.server_if, duration="30", encoded="no") + door
    else:
        conf = daemon_conf(tmp, interface=pair.server_if, duration="30")
    daemon = Daemon(pair, tmp, conf)
    sshds = [Sshd(pair, tmp, key, pair.server_ip, port) for port in ports]
    daemon.wait_log(rf"capturing on {pair.server_if}")
    return Server(pair, daemon, sshds)


@pytest.fixture
def sshd_dir() -> Iterator[None]:
    """Before ``pair`` in a test's arguments: removed after the namespaces and their sshds."""
    with privsep_dir():
        yield


def ssh(
    pair: NetnsPair, tmp: Path, argv: list[str], *, stdin: Path | None = None,
    stdout: Path | None = None, timeout: float = 30,
) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    """A command (ssh, scp) in the client namespace, with this tree's aioknock importable."""
    with contextlib.ExitStack() as files:
        given = files.enter_context(open(stdin, "rb")) if stdin else subprocess.DEVNULL
        taken = files.enter_context(open(stdout, "wb")) if stdout else subprocess.PIPE
        return subprocess.run(["ip", "netns", "exec", pair.client, *argv], stdin=given,
                              stdout=taken, stderr=subprocess.PIPE, env=daemon_env(tmp),
                              timeout=timeout, check=False)  # fmt: skip


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@requires_root
def test_ssh_logs_in_through_the_knock_and_50_mb_go_both_ways_intact(
    sshd_dir: None, pair: NetnsPair, tmp_path: Path
) -> None:
    key = user_key(tmp_path)
    server = serve(pair, tmp_path / "server", key, [22])
    proxy = proxy_command(client_conf(tmp_path))
    address = pair.server_ip

    began = time.monotonic()
    direct = ssh(pair, tmp_path, ["ssh", *ssh_options(tmp_path, key, None, connect_timeout=1),
                                  f"root@{address}", "true"])  # fmt: skip
    assert direct.returncode == 255, "sshd answered before any knock"
    assert b"Connection timed out" in direct.stderr, direct.stderr  # dropped, not refused
    assert time.monotonic() - began < 5

    began = time.monotonic()
    login = ssh(pair, tmp_path, ssh_argv(tmp_path, key, proxy, address, 22, ["true"]))
    took = time.monotonic() - began
    assert login.returncode == 0, login.stderr.decode(errors="replace")
    assert login.stderr == b"" and login.stdout == b""
    server.daemon.wait_log(r"accepted knock from 198\.18\.0\.1 \(knock\): opening tcp/22")
    assert "198.18.0.1 . tcp . 22" in server.opened()
    assert took < 10, took

    data = tmp_path / "data"
    with open(data, "wb") as f:  # 50 MB that do not compress: ssh's -C gains nothing
        for _ in range(BIG // (1 << 20)):
            f.write(os.urandom(1 << 20))
    uploaded = tmp_path / "uploaded"  # the namespaces share the file system
    scp = ["scp", *ssh_options(tmp_path, key, proxy), "-P", "22", str(data),
           f"root@{address}:{uploaded}"]  # fmt: skip
    began = time.monotonic()
    up = ssh(pair, tmp_path, scp, timeout=60)
    up_took = time.monotonic() - began
    assert up.returncode == 0, up.stderr.decode(errors="replace")
    assert sha256(uploaded) == sha256(data)

    downloaded = tmp_path / "downloaded"
    began = time.monotonic()
    cat = ssh_argv(tmp_path, key, proxy, address, 22, ["cat", str(uploaded)])
    down = ssh(pair, tmp_path, cat, stdout=downloaded, timeout=60)
    down_took = time.monotonic() - began
    assert down.returncode == 0, down.stderr.decode(errors="replace")
    assert sha256(downloaded) == sha256(data)
    assert up_took < 30 and down_took < 30, (up_took, down_took)
    print(f"ssh true {took:.2f} s; 50 MB up by scp {up_took:.2f} s, down by ssh cat "
          f"{down_took:.2f} s")  # fmt: skip


@requires_root
def test_without_a_valid_knock_ssh_fails_with_the_reason(
    sshd_dir: None, pair: NetnsPair, tmp_path: Path
) -> None:
    key = user_key(tmp_path)
    server = serve(pair, tmp_path / "server", key, [22])
    wrong = client_conf(tmp_path, key="not the key", verify_timeout="1")
    argv = ssh_argv(tmp_path, key, proxy_command(wrong), pair.server_ip, 22, ["true"])
    began = time.monotonic()
    res = ssh(pair, tmp_path, argv)
    took = time.monotonic() - began
    assert res.returncode == 255
    ours = [line for line in res.stderr.decode().splitlines() if line.startswith("aioknock")]
    assert ours == [
        "aioknock: error: 198.18.0.2: port 22 still closed 1 s after the knock (no answer)"
    ], res.stderr
    server.daemon.wait_log(r"warning: refused knock from 198\.18\.0\.1: ")
    assert "accepted" not in server.daemon.stderr
    assert "198.18.0.1" not in server.opened()
    assert took < 8, took


INVENTORY = """\
[knocked]
{hosts}

[knocked:vars]
ansible_user=root
ansible_ssh_private_key_file={key}
ansible_python_interpreter={python}
ansible_ssh_common_args='-o ProxyCommand="{proxy}" -o UserKnownHostsFile={known} \
-o StrictHostKeyChecking=no'
"""


# The second server opens for a knockd-style sequence; the client's <host> block says so.
DOOR = "<door ssh>\n  sequence = 7000,8000:udp,9000\n  port = 2202\n</door>\n"
SEQUENCE_HOST = "<host 198.18.1.2>\n  sequence = 7000,8000:udp,9000\n</host>\n"


@requires_root
def test_ansible_pings_three_hosts_through_the_proxy_command(
    sshd_dir: None, pair: NetnsPair, tmp_path: Path
) -> None:
    """Three server namespaces, each with its own daemon, DROP and sshd (on ports 2201,
    2202, 2203: each host's knock asks for the port its inventory line names); the second
    wants a fixed sequence, which the client's ``<host>`` block gives ``connect %h``."""
    key = user_key(tmp_path)
    with another_server(pair, 1) as second, another_server(pair, 2) as third:
        servers = [serve(pair, tmp_path / "server0", key, [2201]),
                   serve(second, tmp_path / "server1", key, [2202], door=DOOR),
                   serve(third, tmp_path / "server2", key, [2203])]  # fmt: skip
        hosts = "\n".join(f"host{i} ansible_host={s.pair.server_ip} ansible_port={2201 + i}"
                          for i, s in enumerate(servers))  # fmt: skip
        inventory = tmp_path / "inventory.ini"
        inventory.write_text(INVENTORY.format(
            hosts=hosts, key=key, python=PY,
            proxy=proxy_command(client_conf(tmp_path, blocks=SEQUENCE_HOST)),
            known=tmp_path / "known_hosts",
        ))  # fmt: skip
        cfg = tmp_path / "ansible.cfg"  # none of the host's: an empty one
        cfg.write_text("[defaults]\n")
        env = {**daemon_env(tmp_path), "LC_ALL": "C.UTF-8", "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
               "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",  # no master left behind
               "ANSIBLE_PIPELINING": "true", "ANSIBLE_CONFIG": str(cfg)}  # fmt: skip
        began = time.monotonic()
        res = subprocess.run(
            ["ip", "netns", "exec", pair.client, ANSIBLE, "knocked", "-i", str(inventory),
             "-m", "ping", "-o"], capture_output=True, text=True, env=env, cwd=tmp_path,
            timeout=60, check=False,
        )  # fmt: skip
        took = time.monotonic() - began
        assert res.returncode == 0, res.stdout + res.stderr
        for i in range(3):
            assert re.search(rf'^host{i} \| SUCCESS => .*"ping": "pong"', res.stdout, re.M), (
                res.stdout
            )
        for i, server in enumerate(servers):
            client, via = server.pair.client_ip, "ssh" if i == 1 else "knock"
            server.daemon.wait_log(rf"accepted knock from {re.escape(client)} \({via}\): "
                                   rf"opening tcp/{2201 + i}")  # fmt: skip
            assert f"{client} . tcp . {2201 + i}" in server.opened()
        print(f"ansible ping, three hosts: {took:.2f} s")
