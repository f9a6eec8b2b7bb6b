"""The results table (Markdown, printed and written into bench/README.md) and the machine's
description, so every figure travels with the hardware and software it was measured on."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

README = Path(__file__).with_name("README.md")
RESULTS_DIR = Path(__file__).with_name("results")  # git-ignored: logs and raw outputs


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    count: str  # "1,000,000 orders", "5,000 jobs"; "" for memory rows
    seconds: float | None
    value: float  # a rate per second, or an amount (MiB, CPU seconds)
    unit: str  # "orders/s", "jobs/s", "MiB", "CPU s"
    ratio: float | None = None  # value / its baseline's value
    baseline: str = ""
    target: str = ""
    passed: bool | None = None  # None: context only, no target
    note: str = ""

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}x {self.baseline}"
        verdict = {None: "", True: "pass", False: "**FAIL**"}[self.passed]
        seconds = "" if self.seconds is None else f"{self.seconds:.2f}"
        rate = self.unit.endswith("/s")
        value = f"{self.value:,.0f}" if rate else f"{self.value:,.2f} {self.unit}"
        return [self.name, self.count, seconds, value, ratio, self.target, verdict, self.note]


HEADER = "measurement | orders / jobs | seconds | rate /s | ratio | target | result | notes"


def markdown_table(rows: list[Row]) -> str:
    lines = [f"| {HEADER} |", "|" + "---|" * len(HEADER.split(" | "))]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row.cells()) + " |")
    return "\n".join(lines)


def machine() -> str:
    try:
        cpu = re.search(r"model name\s*: (.*)", Path("/proc/cpuinfo").read_text())
        memory = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    except OSError:
        cpu = memory = None
    gib = int(memory.group(1)) / 1024 / 1024 if memory else 0.0
    return (
        f"{platform.platform()}; {cpu.group(1) if cpu else platform.processor() or 'unknown CPU'}, "
        f"{os.cpu_count()} cores, {gib:.1f} GiB RAM; Python {platform.python_version()}"
    )


def results_section(
    rows: list[Row], *, orders: int, servers: str, versions: tuple[str, str], tuning: str
) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    passed = [row.passed for row in rows if row.passed is not None]
    verdict = f"{sum(passed)} of {len(passed)} targets met"
    return "\n".join(
        [
            f"Run of **{stamp}**, {orders:,} orders, {servers}.",
            "",
            f"- Machine: {machine()}",
            f"- Servers: {versions[0]}, {versions[1]}",
            f"- Product settings (defaults): {tuning}",
            f"- Load average at the end (1 min; the machine is shared): {os.getloadavg()[0]:.1f}",
            "",
            markdown_table(rows),
            "",
            f"{verdict}.",
        ]
    )


def write_readme(results: str, marker: str = "results") -> None:
    """`results` between the README's `<!-- marker -->` and `<!-- /marker -->`."""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    head, found_start, rest = README.read_text().partition(start)
    _, found_end, tail = rest.partition(end)
    if not found_start or not found_end:
        raise ValueError(f"{README} lacks the markers {start} ... {end}")
    README.write_text(f"{head}{start}\n{results}\n{end}{tail}")
