"""Real child processes (the CLI, worker replicas, the bare arq worker), each with its own peak RSS
and CPU time.

Peak RSS is the kernel's high-water mark of the child's own address space (VmHWM in
/proc/PID/status), read every few milliseconds until it exits. wait4()'s ru_maxrss would not do:
on Linux it carries over the RSS of the forking parent (this harness, ~80 MiB) across exec. CPU
time does come from wait4(): user + system of that child alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from worker.harness.polling import poll_until

RSS_POLL_S = 0.01
MIB = 1024 * 1024
# This machine sets PYTHONDONTWRITEBYTECODE=1 and the venv holds no .pyc files, so every process
# would compile every module it imports (~3.5 s of a worker's start). Children cache bytecode here
# instead, as a deployed image does (UV_COMPILE_BYTECODE=1); the cache is warmed before timing.
BYTECODE_CACHE = Path(__file__).with_name("results") / "pycache"
# Every command's module (the CLI imports each only when it runs) and what health's checks import.
WARM_IMPORTS = (
    "import importlib, worker.cli, worker.cli.health_checks, worker.replica, bench.noop_worker\n"
    "import bench.saq_worker\n"
    "for entry in worker.cli.COMMANDS.values():\n"
    "    importlib.import_module(entry.target.partition(':')[0])"
)


@dataclass(frozen=True, slots=True)
class Finished:
    returncode: int
    seconds: float  # from spawn to exit
    peak_rss_mib: float
    cpu_seconds: float  # user + system
    stdout: str


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_bytecode_cache(env: Mapping[str, str]) -> dict[str, str]:
    cached = {key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(BYTECODE_CACHE)
    return cached


def exit_on_sigterm() -> None:
    """SIGTERM unwinds the harness like Ctrl-C does, so its servers and children are stopped."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def warm_bytecode_cache() -> float:
    """Import everything a child imports once, so no timed process pays for compiling."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", WARM_IMPORTS], env=with_bytecode_cache(os.environ), check=True
    )
    return time.perf_counter() - started


LIVE: set[Child] = set()  # spawned and not reaped yet: killed by `kill_all` on the way out


def kill_all() -> None:
    """Last resort when the harness itself is stopped: no child outlives it."""
    for child in list(LIVE):
        child.kill()


class Child:
    """One spawned process; stdout and stderr go to files under `log_dir`."""

    def __init__(
        self, args: Sequence[str], env: Mapping[str, str], log_dir: Path, label: str
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.label = label
        self.stdout_path = log_dir / f"{label}.out"
        self.stderr_path = log_dir / f"{label}.log"
        self.started = time.perf_counter()
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", *args], env=with_bytecode_cache(env), stdout=out, stderr=err
            )
        self.result: Finished | None = None
        self.peak_rss = 0
        self._reaped = threading.Event()
        self._rss_watch = threading.Thread(target=self._watch_rss, daemon=True)
        self._rss_watch.start()
        LIVE.add(self)

    def poll(self, block: bool = False) -> Finished | None:
        """Reap the child if it has exited (or, with `block`, once it does)."""
        if self.result is not None:
            return self.result
        pid, status, usage = os.wait4(self.process.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return None
        self._reaped.set()
        self._rss_watch.join()
        LIVE.discard(self)
        # Reaped here, not by Popen: tell Popen so it never waits for the pid again.
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self.result = Finished(
            returncode=self.process.returncode,
            seconds=time.perf_counter() - self.started,
            peak_rss_mib=self.peak_rss / MIB,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            stdout=self.stdout_path.read_text(),
        )
        return self.result

    def _watch_rss(self) -> None:
        """Samples VmHWM until the child is reaped (or its /proc entry is gone)."""
        while not self._reaped.is_set():
            try:  # gone once it has exited (or become a zombie)
                with open(f"/proc/{self.process.pid}/status") as status:
                    kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
            except (OSError, StopIteration):
                return
            self.peak_rss = max(self.peak_rss, int(kib) * 1024)
            self._reaped.wait(RSS_POLL_S)

    async def finished(self, timeout_s: float) -> Finished:
        try:
            await poll_until(lambda: self.poll() is not None, f"{self.label} exit", timeout_s)
        finally:
            self.kill()  # on a timeout (a no-op once it has exited)
        assert self.result is not None
        return self.result

    def check_alive(self) -> None:
        """Raise, with the tail of its log, once it has exited."""
        if self.poll() is not None:
            tail = self.stderr_path.read_text(errors="replace").splitlines()[-5:]
            raise RuntimeError(f"{self.label} exited early:\n" + "\n".join(tail))

    async def stop(self, timeout_s: float = 60.0) -> Finished:
        """SIGTERM (a worker drains in-flight jobs first), then reap."""
        if self.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.finished(timeout_s)

    def kill(self) -> None:
        if self.poll() is None:
            self.process.kill()
            self.poll(block=True)
