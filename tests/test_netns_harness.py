"""Proves the netns harness: isolation, nftables drop, tcpdump capture, cleanup."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

import pytest
from helpers.netns import NetnsPair, netns_exists, netns_pair, requires_root

PORTS = list(range(40000, 40010))

# Bounded client: one non-blocking connect per port, 50 ms apart; each socket is
# closed 0.5 s after its SYN (before the 1 s retransmission), so one SYN per port.
# Prints the wall-clock time it began, before its first slot.
KNOCK = textwrap.dedent(
    """
    import socket, sys, time
    host, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
    print(time.time(), flush=True)
    socks, t0 = [], time.monotonic()
    for i, port in enumerate(ports):
        time.sleep(max(0.0, t0 + 0.05 * i - time.monotonic()))
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        socks.append((time.monotonic(), s))
    for t, s in socks:
        time.sleep(max(0.0, t + 0.5 - time.monotonic()))
        s.close()
    """
)

LISTEN = textwrap.dedent(
    """
    import socket, sys
    fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as srv:
        srv.bind((sys.argv[1], int(sys.argv[2])))
        srv.listen(1)
        srv.settimeout(8)
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b"pong")
    """
)

CONNECT = textwrap.dedent(
    """
    import socket, sys
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
        print(s.recv(16).decode())
    """
)


@requires_root
def test_dropped_syns_captured_in_order(pair: NetnsPair) -> None:
    pair.nft_drop(PORTS)
    cap = pair.capture()
    replies = pair.capture(f"tcp and src host {pair.server_ip}")  # proves the drop
    res = pair.run(
        pair.client, [sys.executable, "-c", KNOCK, pair.server_ip, *map(str, PORTS)], timeout=10
    )
    assert res.returncode == 0
    pkts = cap.stop()
    assert replies.stop(settle=0.0) == [], replies.text
    assert cap.kernel_dropped == 0
    assert [p.dport for p in pkts] == PORTS, cap.text
    assert {(p.src, p.dst, p.proto) for p in pkts} == {(pair.client_ip, pair.server_ip, "tcp")}
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(pkts)]
    print("gaps", [round(g * 1000, 1) for g in gaps])
    # The timestamps are the wire's: no SYN before the client's slot for it (its
    # schedule never sends early); how late each is, is the machine's load.
    began = float(res.stdout)
    early = [p.timestamp - (began + 0.05 * i) for i, p in enumerate(pkts)]
    assert all(e >= -0.002 for e in early), early
    assert all(0 <= g <= 0.5 for g in gaps), gaps


@requires_root
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_listener_on_undropped_port_answers(pair: NetnsPair, family: str) -> None:
    pair.nft_drop(PORTS)
    port = 40010
    server_ip = pair.server_ip if family == "ipv4" else pair.server_ip6
    pair.popen(pair.server, [sys.executable, "-c", LISTEN, server_ip, str(port)])
    pair.wait_port(port)
    cap = pair.capture()
    res = pair.run(pair.client, [sys.executable, "-c", CONNECT, server_ip, str(port)])
    assert res.stdout.strip() == "pong"
    pkts = cap.stop()
    client_ip = pair.client_ip if family == "ipv4" else pair.client_ip6
    assert [(p.src, p.dst, p.dport, p.proto) for p in pkts] == [
        (client_ip, server_ip, port, "tcp")
    ], cap.text


@requires_root
def test_namespaces_and_processes_gone_after_exit() -> None:
    with netns_pair() as p:
        names = [p.client, p.server]
        assert all(netns_exists(n) for n in names)
        proc = p.popen(p.server, ["sleep", "30"], stdout=subprocess.DEVNULL)
    assert not any(netns_exists(n) for n in names)
    assert proc.returncode is not None

    with pytest.raises(RuntimeError, match="boom"), netns_pair() as p:
        names = [p.client, p.server]
        p.popen(p.client, ["sleep", "30"])
        raise RuntimeError("boom")
    assert not any(netns_exists(n) for n in names)
