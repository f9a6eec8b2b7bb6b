"""Start-up: the CPU time of `orderworker --help` and of `orderworker health` (one Redis read, no
replica: exit 1), each the median of RUNS fresh processes with bytecode cached, so what is
measured is what a command imports and sets up."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from bench.processes import Child
from bench.report import Row

RUNS = 11
TARGETS_CPU_S = {"--help": 0.15, "health": 0.30}


async def startup_rows(redis_url: str, log_dir: Path) -> list[Row]:
    env = {**os.environ, "ORDERWORKER_REDIS_URL": redis_url}
    rows = []
    for command, target in TARGETS_CPU_S.items():
        cpu = []
        for run in range(RUNS):
            child = Child(["worker", command], env, log_dir, f"startup{command}-{run}")
            cpu.append((await child.finished(timeout_s=60)).cpu_seconds)
        median = statistics.median(cpu)
        note = f"median {median:.3f} of {RUNS} processes (min {min(cpu):.3f}, max {max(cpu):.3f})"
        rows.append(
            Row(
                f"`orderworker {command}`: start to exit",
                f"{RUNS} runs",
                None,
                median,
                "CPU s",
                target=f"<= {target:g} CPU s",
                passed=median <= target,
                note=note,
            )
        )
    return rows
