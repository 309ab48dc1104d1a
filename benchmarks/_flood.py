"""One run of the real daemon under a flood, as bench_daemon.py and bench_spa.py both make it.

* In the client namespace, ``send_paced`` sends the prepared raw packets (IP_HDRINCL),
  paced and bounded in count and time, and writes what it sent to a JSON file.
* In the server namespace, a ``Watch`` runs the real ``aioknock daemon`` command with
  subclasses of ``KnockDaemon`` and ``Sniffer`` in their place that only watch: they time
  the batches the daemon hands to its engine (bursts), keep its verdicts (each script
  says which, ``Watch.record``), read the capture socket's PACKET_STATISTICS before it
  closes and, on exit, CPU time and VmRSS/VmHWM (``Watch.report``).
* On the host, ``watched_daemon`` starts that driver, and stops it and reads its report
  into a ``Run`` (the figures every run has) when the block is done.

What differs between the two benchmarks (the stream, the packets, what a verdict is
worth, the tables) stays in each of them; they run as scripts, so this sits beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _procs import stop

if TYPE_CHECKING:
    from aioknock.asyncio.daemon import KnockDaemon
    from aioknock.daemon.packet import Packet
    from aioknock.daemon.recognizer import Verdict

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
NET = ipaddress.ip_network("198.18.0.0/15")  # the namespaces' addresses, spoofed ones too
RUN_LIMIT = 60.0  # seconds: no sender, writer, client or drain runs longer than this
BURST_GAP = 0.01  # seconds without a batch that end a burst (idle, not working)


# ------------------------------------------------- run inside the client namespace


def in_namespace(name: str) -> bool:
    """Whether this process runs in the network namespace ``ip netns`` knows as ``name``."""
    here, there = os.stat("/proc/self/ns/net"), os.stat(f"/run/netns/{name}")
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def send_paced(netns: str, packets: Sequence[bytes], address: str, rate: float, limit: float,
               cue: int, marks: Mapping[int, str], out: str) -> bool:  # fmt: skip
    """Send ``packets`` (whole IPv4 packets) to ``address`` in 198.18.0.0/15 from a raw
    socket, paced at ``rate`` per second (0: as fast as possible), for ``limit`` seconds
    at most, only inside network namespace ``netns``; prints "cue" once packet ``cue`` is
    due (negative: never). Writes to ``out`` how many went out, in how long, from when,
    the send errors, and when each packet of ``marks`` went (under its name there).
    Returns whether the cue is still due (the time limit came first)."""
    if ipaddress.ip_address(address) not in NET:
        raise SystemExit("packets must go to 198.18.0.0/15")
    if not in_namespace(netns):
        raise SystemExit(f"refusing to send: not inside network namespace {netns}")
    times: dict[str, float] = {}
    errors: dict[str, int] = {}
    sent = 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    t0, p0 = time.time(), time.perf_counter()
    for i, pkt in enumerate(packets):
        if not i & 63:
            now = time.perf_counter()
            if now - p0 > limit:
                break
            if cue >= 0 and i >= cue:
                print("cue", flush=True)  # the parent starts the real clients now
                cue = -1
            if rate and (ahead := p0 + i / rate - now) > 0:
                time.sleep(ahead)
        if i in marks:
            times[marks[i]] = time.time()
        try:
            sock.sendto(pkt, (address, 0))
            sent += 1
        except OSError as exc:
            name = os.strerror(exc.errno or 0)
            errors[name] = errors.get(name, 0) + 1
    wall = time.perf_counter() - p0
    sock.close()
    Path(out).write_text(json.dumps({"sent": sent, "wall": wall, "start": t0, "errors": errors,
                                     "marks": times}))  # fmt: skip
    return cue >= 0


# ------------------------------------------------- run inside the server namespace


def proc_status(*names: str) -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in names:
                out[key] = int(value.split()[0])  # kB
    return out


def run_cli(argv: list[str], profile: str) -> int:
    """The CLI's ``main``, under cProfile when ``profile`` names a file for its report."""
    from aioknock.cli.main import main as cli_main

    if profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        rc = prof.runcall(cli_main, argv)
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(22)
        Path(profile).write_text(text.getvalue())
    else:
        rc = cli_main(argv)
    return rc


class Watch:
    """``aioknock daemon``, run by ``run`` with watching subclasses in place of the
    daemon's and the capture's classes; ``state`` is what they saw, reported as JSON.
    A script's subclass says what a verdict and a batch's packets count for (``record``,
    ``counted``) and may watch more (``batch_start``, ``recognizers_changed``, ``patch``)."""

    def __init__(self, keep_bursts: int, extra: dict[str, Any]) -> None:
        self.keep_bursts = keep_bursts  # bursts of >= 1,000 packets kept for the report
        self.state: dict[str, Any] = {"kernel": None, "burst": None, "bursts": [],
                                      "burst_count": 0, "decisions": [], "rss_ready_kb": 0,
                                      **extra}  # fmt: skip
        self.daemons: list[KnockDaemon] = []

    @property
    def daemon(self) -> KnockDaemon | None:
        return self.daemons[-1] if self.daemons else None

    def end_burst(self) -> None:
        """Keep the burst if it had 1,000 packets or more (up to keep_bursts); count all."""
        state = self.state
        b = state["burst"]
        if b is not None:
            state["burst_count"] += 1
            if b["packets"] >= 1000 and len(state["bursts"]) < self.keep_bursts:
                state["bursts"].append(b)
            state["burst"] = None

    def batch_start(self) -> tuple[float, float]:
        """When the batch about to be judged began: wall (perf_counter) and CPU time."""
        return time.perf_counter(), time.process_time()

    def record(self, verdict: Verdict, now: float) -> None:
        """A verdict of the engine's, as it judges (inside the batch's time)."""

    def counted(self, packets: list[Packet]) -> None:
        """A batch's packets, once judged (outside the batch's time)."""

    def recognizers_changed(self, daemon: KnockDaemon) -> None:
        """The daemon has its recognizers: from the start, and after each reload."""

    def patch(self) -> None:
        """Put the watching classes in place of the daemon's."""
        import aioknock.asyncio.daemon as daemon_mod
        import aioknock.asyncio.sniffer as sniffer_mod

        watch, state = self, self.state

        class WatchedSniffer(sniffer_mod.Sniffer):
            def close(self) -> None:
                if self._sock.fileno() >= 0:
                    with contextlib.suppress(OSError):
                        received, dropped = self.stats()  # since the socket was opened
                        k = state["kernel"] or {"received": 0, "dropped": 0}
                        k["received"] += received
                        k["dropped"] += dropped
                        state["kernel"] = k
                super().close()

        class WatchedDaemon(daemon_mod.KnockDaemon):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                engine = self.engine
                judge = type(engine)._judge

                def judged(verdict: Verdict, now: float) -> None:
                    watch.record(verdict, now)
                    judge(engine, verdict, now)

                engine._judge = judged  # type: ignore[method-assign]
                watch.recognizers_changed(self)
                watch.daemons.append(self)

            def _switch(self, conf: Any) -> None:
                super()._switch(conf)
                watch.recognizers_changed(self)

            async def run(self, stop: asyncio.Event) -> None:
                state["rss_ready_kb"] = proc_status("VmRSS")["VmRSS"]
                await super().run(stop)

            def _receive(self, packets: list[Packet], seen: int) -> None:
                t0, c0 = watch.batch_start()
                b = state["burst"]
                if b is None or t0 - b["end"] > BURST_GAP:
                    watch.end_burst()
                    b = state["burst"] = {"start": t0, "end": t0, "epoch": time.time(),
                                          "cpu0": c0, "cpu1": c0, "packets": 0,
                                          "batches": 0}  # fmt: skip
                super()._receive(packets, seen)
                b["end"], b["cpu1"] = time.perf_counter(), time.process_time()
                b["packets"] += len(packets)
                b["batches"] += 1
                watch.counted(packets)

        setattr(sniffer_mod, "Sniffer", WatchedSniffer)  # noqa: B010 - module attribute
        setattr(daemon_mod, "Sniffer", WatchedSniffer)  # noqa: B010
        setattr(daemon_mod, "KnockDaemon", WatchedDaemon)  # noqa: B010

    def run(self, conf: str, profile: str) -> int:
        """``aioknock daemon -conf CONF`` until it stops (SIGTERM); its exit code."""
        self.patch()
        rc = run_cli(["daemon", "-conf", conf], profile)
        self.end_burst()
        return rc

    def report(self, out: str, rc: int, **extra: Any) -> None:
        """Write to ``out`` the daemon's counts, CPU time, memory, ``extra`` and the state."""
        status = proc_status("VmRSS", "VmHWM")
        d = self.daemon
        result = {
            "rc": rc,
            "counts": d.counts if d else {},
            **extra,
            "cpu_total": time.process_time(),
            "rss_end_kb": status["VmRSS"],
            "hwm_kb": status["VmHWM"],
            **self.state,
        }
        Path(out).write_text(json.dumps(result))


# ------------------------------------------------------------- host side


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOKNOCK_")}
    return {**env, "HOME": str(home), "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}"}


def in_ns(ns: str, tmp: Path, argv: list[str]) -> subprocess.Popen[str]:
    """``argv`` in namespace ``ns``, its output piped."""
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=tmp, env=env_for(tmp),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def wait_idle(pid: int, limit: float = RUN_LIMIT) -> float:
    """Wait until the process uses < 5% CPU over 0.4 s; returns the seconds waited."""
    t0 = time.monotonic()
    last, quiet = cpu_ticks(pid), 0
    while time.monotonic() - t0 < limit and quiet < 2:
        time.sleep(0.2)
        now = cpu_ticks(pid)
        quiet = quiet + 1 if now - last <= 1 else 0
        last = now
    return time.monotonic() - t0


def wait_log(path: Path, pattern: str, proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, path.read_text(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"daemon not ready: {path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.02)


@dataclass
class Run:
    """What every run reports: the sender's figures and the driver's."""

    label: str
    _: KW_ONLY
    sent: int = 0
    send_wall: float = 0.0
    send_start: float = 0.0
    send_errors: dict[str, int] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)
    driver: dict[str, Any] = field(default_factory=dict)
    link: dict[str, int] = field(default_factory=dict)
    opens: list[str] = field(default_factory=list)
    stopped_line: str = ""
    profile: str = ""

    def read_sender(self, sender: subprocess.Popen[str], serr: str, path: Path) -> dict[str, float]:
        """The sender's figures from its JSON file at ``path``; returns its marks' times."""
        if sender.returncode != 0:
            raise RuntimeError(f"sender failed ({sender.returncode}): {serr.strip()}")
        sent = json.loads(path.read_text())
        self.sent, self.send_wall, self.send_start = sent["sent"], sent["wall"], sent["start"]
        self.send_errors = sent["errors"]
        marks: dict[str, float] = sent["marks"]
        return marks

    def busy(self) -> tuple[int, float, float]:
        """Packets, wall seconds and CPU seconds of the bursts of >= 1,000 packets."""
        bursts = self.driver.get("bursts", [])
        return (sum(b["packets"] for b in bursts), sum(b["end"] - b["start"] for b in bursts),
                sum(b["cpu1"] - b["cpu0"] for b in bursts))  # fmt: skip

    def accepts(self) -> list[list[Any]]:
        return [d for d in self.driver.get("decisions", []) if d[0] == "accept"]

    def print_title(self, stream: str) -> None:
        """The first lines of the run's details: its name, its stream, send errors."""
        print(f"\n{self.label}:")
        print(f"  stream: {stream}")
        if self.send_errors:
            print(f"  send errors: {self.send_errors}")

    def print_profile(self) -> None:
        if self.profile:
            print(f"\n--- cProfile of the daemon, {self.label} (slowed down by the profiler) ---")
            print(self.profile.rstrip())


@contextlib.contextmanager
def watched_daemon(ns: str, module: str, tmp: Path, label: str, conf: Path, profile: bool,
                   ready: str, run: Run) -> Iterator[None]:  # fmt: skip
    """``module``'s ``driver_main`` (a ``Watch``) in namespace ``ns`` with the daemon's
    configuration ``conf``, once its log matches ``ready``. When the block is done, it
    waits for the daemon to be idle, stops it and reads the driver's report into ``run``
    (its ``driver``, ``stopped_line``, ``profile``); the daemon is stopped in any case."""
    out, err = tmp / f"driver-{label}.json", tmp / f"daemon-{label}.log"
    prof = tmp / f"{label}.prof"
    code = (f"import sys, {module} as b; sys.exit(b.driver_main({str(conf)!r}, {str(out)!r}, "
            f"{str(prof) if profile else ''!r}))")  # fmt: skip
    with open(err, "wb") as errf:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                                cwd=tmp, env=env_for(tmp), stdin=subprocess.DEVNULL,
                                stdout=errf, stderr=errf)  # fmt: skip
    try:
        wait_log(err, ready, proc)
        yield
        wait_idle(proc.pid)
        stop(proc, signal.SIGTERM, wait=15)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"daemon failed ({proc.returncode}): {err.read_text()[-2000:]}")
    finally:
        stop(proc, signal.SIGTERM)
    run.driver = json.loads(out.read_text())
    log = err.read_text(errors="replace")
    m = re.search(r"stopped: .*", log)
    run.stopped_line = m.group(0) if m else "(no summary line)"
    if "Traceback" in log:
        raise RuntimeError(f"the daemon raised: {log[-3000:]}")
    if prof.exists():
        run.profile = prof.read_text()
