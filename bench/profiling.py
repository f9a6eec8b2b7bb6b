"""Where a worker's CPU goes on the per-order path: py-spy samples a burst worker draining single
`compute_order_total` jobs; samples are grouped by the library doing the work.

py-spy is not a project dependency: it runs with `uv tool run py-spy` (fetched on first use).
Raw collapsed stacks are kept under bench/results/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.baselines import truncate_totals
from bench.drain import enqueue_single_jobs
from bench.measure import Bench
from bench.noop_worker import NOOP_FUNCTION
from bench.processes import Child
from bench.stack import clear_queue_keys
from worker.harness.checks import check_totals

SAMPLE_RATE_HZ = 250
PROFILE_TIMEOUT_S = 600.0
TOP_FUNCTIONS = 12

# The first path component of a frame's file (py-spy prints paths relative to sys.path).
LIBRARIES = {
    "sqlalchemy": "SQLAlchemy (ORM session, Core, result rows)",
    "asyncpg": "asyncpg (driver, Python side)",
    "arq": "arq (polling, job bookkeeping)",
    "redis": "redis-py (commands, parsing, pool)",
    "pydantic": "pydantic (payload validation, result dump)",
    "json": "JSON (job envelopes and results)",
    "asyncio": "event loop (asyncio/uvloop)",
    "uvloop": "event loop (asyncio/uvloop)",
    "structlog": "logging (structlog + stdlib)",
    "logging": "logging (structlog + stdlib)",
    "jobs": "orderworker jobs/ (runner, functions)",
    "db": "orderworker db/",
    "worker": "orderworker worker/ (replica)",
}
LOGGING = LIBRARIES["logging"]
EVENT_LOOP = LIBRARIES["asyncio"]
OVERRIDES = {"serialization.py": LIBRARIES["json"], "logs.py": LOGGING}
# Phases, told apart by a frame each sample's stack holds.
IMPORTS = "startup: imports"
ENGINE = "startup: engine and database check (on_startup)"
SETUP = "startup: CLI, settings, worker construction"
PROCESSING = "processing: polling and running jobs"
# The frame that runs the event loop: asyncio.Runner (orderworker), arq's Worker.run (bare arq).
EVENT_LOOP_FRAMES = ("Runner.run (", "Worker.run (")
PROGRAM_ENTRY_FRAMES = ("_run_module_as_main (", "<module> (")
NATIVE = "native code, no Python frame (greenlet switches, GC, uvloop)"


def frame_file(frame: str) -> str:
    """`function (path/to/file.py:123)` -> `path/to/file.py`."""
    inside = frame.rpartition(" (")[2].rstrip(")")
    return inside.rpartition(":")[0] or inside


def category(frame: str) -> str | None:
    path = frame_file(frame)
    name = path.rpartition("/")[2]
    if name in OVERRIDES and path.startswith(("jobs/", "worker/")):
        return OVERRIDES[name]
    return LIBRARIES.get(path.partition("/")[0])


def phase(stack: list[str]) -> str:
    if any("importlib._bootstrap" in frame for frame in stack):
        return IMPORTS
    if any(frame.startswith("OrderWorker._startup ") for frame in stack):
        return ENGINE
    if any(frame.startswith(EVENT_LOOP_FRAMES) for frame in stack):
        return PROCESSING
    if stack and stack[0].startswith(PROGRAM_ENTRY_FRAMES):
        return SETUP
    # A stack not rooted at the program's entry: SQLAlchemy's greenlets (sampled apart from the
    # event loop's stack), or native code with no Python frame at all.
    return PROCESSING


def classify(stack: list[str]) -> str:
    """Anything under a logging call is logging. Otherwise the leaf-most library below the event
    loop's own frame, not counting asyncio (a socket write issued by redis-py is redis-py's cost);
    with none, the event loop itself (uvloop's C code: callbacks, transports)."""
    if not any(stack):
        return NATIVE
    if any(category(frame) == LOGGING for frame in stack):
        return LOGGING
    loop_at = max(
        (n for n, frame in enumerate(stack) if frame.startswith(EVENT_LOOP_FRAMES)), default=-1
    )
    for frame in reversed(stack[loop_at + 1 :]):
        found = category(frame)
        if found is not None and found != EVENT_LOOP:
            return found
    return EVENT_LOOP


@dataclass(slots=True)
class Profile:
    jobs: int
    seconds: float
    phases: Counter[str] = field(default_factory=Counter)
    processing: Counter[str] = field(default_factory=Counter)  # by library
    leaves: Counter[str] = field(default_factory=Counter)  # processing self time by function

    @property
    def total(self) -> int:
        return sum(self.phases.values())

    def ms_per_job(self, samples: int) -> float:
        return samples / SAMPLE_RATE_HZ / self.jobs * 1000

    @property
    def busy_ms_per_job(self) -> float:
        return self.ms_per_job(sum(self.processing.values()))


def summarise(raw: str, jobs: int, seconds: float) -> Profile:
    profile = Profile(jobs, seconds)
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        stack, count = [f for f in stack_text.split(";") if f], int(count_text)
        where = phase(stack)
        profile.phases[where] += count
        if where == PROCESSING:
            profile.processing[classify(stack)] += count
            profile.leaves[stack[-1] if stack else NATIVE] += count
    return profile


def as_markdown(ours: Profile, bare: Profile, note: str) -> str:
    lines = [note, "", "| phase | orderworker | bare arq |", "|---|---|---|"]
    for name in (IMPORTS, SETUP, ENGINE, PROCESSING):
        lines.append(
            f"| {name} | {ours.phases[name] / SAMPLE_RATE_HZ:.2f} s "
            f"| {bare.phases[name] / SAMPLE_RATE_HZ:.2f} s |"
        )
    lines += [
        "",
        f"Processing, in ms of busy time per job: orderworker {ours.busy_ms_per_job:.2f}, "
        f"bare arq {bare.busy_ms_per_job:.2f}.",
        "",
        "| library (leaf-most frame; logging inclusive) | orderworker ms/job | share "
        "| bare arq ms/job |",
        "|---|---|---|---|",
    ]
    busy = sum(ours.processing.values()) or 1
    for name, samples in ours.processing.most_common():
        lines.append(
            f"| {name} | {ours.ms_per_job(samples):.2f} | {samples / busy:.0%} "
            f"| {bare.ms_per_job(bare.processing[name]):.2f} |"
        )
    lines += ["", "Hottest functions of orderworker's processing (self time):", ""]
    lines += [f"- `{leaf}`: {n / busy:.1%}" for leaf, n in ours.leaves.most_common(TOP_FUNCTIONS)]
    return "\n".join(lines)


async def profile_burst(
    bench: Bench, label: str, function: str, worker_args: Callable[[str], list[str]], jobs: int
) -> Profile:
    """py-spy on one burst worker draining `jobs` single jobs of `function`."""
    queue = bench.queue(label)
    await truncate_totals(bench.engine)
    job_ids = await enqueue_single_jobs(bench, queue, function, jobs)
    raw_path = bench.log_dir / f"{label}.txt"
    command = ["uv", "tool", "run", "py-spy", "record", "--format", "raw"]
    command += ["--rate", str(SAMPLE_RATE_HZ), "-o", str(raw_path), "--"]
    command += [sys.executable, "-m", *worker_args(queue)]
    child = Child(command, bench.env(queue), bench.log_dir, label, python_module=False)
    finished = await child.finished(PROFILE_TIMEOUT_S)
    await clear_queue_keys(bench.redis, queue, job_ids)
    try:
        raw = await asyncio.to_thread(raw_path.read_text)
    except FileNotFoundError:
        raw = ""
    if finished.returncode != 0 or not raw:
        raise RuntimeError(f"{label}: py-spy exited {finished.returncode}:\n{child.log_tail()}")
    return summarise(raw, jobs, finished.seconds)


async def profile_per_order(bench: Bench, jobs: int, noop_args: Callable[[str], list[str]]) -> str:
    try:
        ours = await profile_burst(
            bench,
            "profile-orderworker",
            "compute_order_total",
            lambda _: ["worker", "worker", "--burst"],
            jobs,
        )
        check = await check_totals(bench.engine, bench.first_id, bench.first_id + jobs - 1)
        bare = await profile_burst(
            bench, "profile-bare-arq", NOOP_FUNCTION, lambda q: [*noop_args(q), "--burst"], jobs
        )
    except RuntimeError as error:
        return f"profile not taken: {error}"
    note = (
        f"py-spy at {SAMPLE_RATE_HZ} Hz on one burst worker draining {jobs:,} single jobs: "
        f"`compute_order_total` on orderworker ({ours.seconds:.1f}s under the profiler; "
        f"{check.describe()}), and no-op jobs on the bare arq worker with the same tuning "
        f"({bare.seconds:.1f}s). Samples are of busy time: waits in epoll are not sampled, "
        "but time spent runnable while the machine's other processes hold the CPU is."
    )
    summary = as_markdown(ours, bare, note)
    await asyncio.to_thread((bench.log_dir / "profile-summary.md").write_text, summary + "\n")
    return summary
