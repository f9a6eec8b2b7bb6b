"""Tuning experiments behind the recommendations in bench/README.md, in one command:
`uv run python -m bench.experiments [--orders N] [--jobs N] [--rounds N] [--no-readme]`.

Each variant changes settings through ORDERWORKER_* variables, or patches in a proposed code change
with bench.variants (the product's files stay as they are). Variants run in rounds, interleaved,
and each keeps its best round, so a burst of load from elsewhere on the machine hits one round of
one variant rather than a whole variant.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import uvloop

from bench import drain, measure
from bench.baselines import sql_limit, verify_totals
from bench.measure import Bench, Outcome, open_bench, say
from bench.noop_worker import NOOP_FUNCTION
from bench.processes import exit_on_sigterm, kill_all, warm_bytecode_cache
from bench.report import RESULTS_DIR, machine, replace_between
from bench.stack import BenchServers, bench_servers
from worker.settings import load_settings

EXPERIMENTS_START = "<!-- experiments -->"
EXPERIMENTS_END = "<!-- /experiments -->"
SINGLE_JOB = "compute_order_total"


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    patches: tuple[str, ...] = ()
    bare: bool = False  # the reference of per-order rounds: bare arq on no-op jobs
    sql_limit: bool = False  # the reference of batch rounds: the one-statement SQL limit

    @property
    def module(self) -> list[str]:
        """`python -m` arguments that stand for `orderworker`."""
        return ["bench.variants", ",".join(self.patches)] if self.patches else ["worker"]


def settings(**values: str) -> dict[str, str]:
    return {f"ORDERWORKER_{name.upper()}": value for name, value in values.items()}


def _defaults() -> str:
    loaded = load_settings()
    return (
        f"defaults (concurrency {loaded.worker.concurrency}, pool {loaded.database.pool_size}, "
        f"chunk {loaded.totals.chunk_size}, subchunk {loaded.totals.subchunk_size}, "
        f"log {loaded.log.level})"
    )


def chunks(chunk_size: int, subchunk_size: int) -> dict[str, str]:
    return settings(totals__chunk_size=str(chunk_size), totals__subchunk_size=str(subchunk_size))


QUIET = settings(log__level="WARNING")
# The settings this project shipped with before the benchmark: pool 5, chunk 1000, subchunk 250,
# and a pool pre-ping on every checkout.
BEFORE = settings(database__pool_size="5") | chunks(1000, 250)
PER_ORDER = [
    Variant(_defaults()),
    Variant("before: pool 5, pool pre-ping", BEFORE, ("pre-ping",)),
    Variant("pool 5 (no pre-ping)", settings(database__pool_size="5")),
    Variant(
        "concurrency 10, pool 10", settings(worker__concurrency="10", database__pool_size="10")
    ),
    Variant("log level WARNING: no per-job log line", QUIET),
    Variant("patch: AUTOCOMMIT (no BEGIN/COMMIT)", patches=("autocommit",)),
    Variant("patch: AUTOCOMMIT, log level WARNING", QUIET, ("autocommit",)),
    Variant("patch: Core one-order upsert on AUTOCOMMIT", patches=("core-single",)),
    Variant("patch: Core one-order upsert, log level WARNING", QUIET, ("core-single",)),
    Variant("reference: bare arq worker, no-op jobs, same tuning", bare=True),
]
BATCH = [
    Variant(_defaults()),
    Variant("before: pool 5, chunk 1000, subchunk 250, pool pre-ping", BEFORE, ("pre-ping",)),
    Variant("subchunk 5000: one statement per chunk", chunks(5000, 5000)),
    Variant("chunk 10000, subchunk 2500", chunks(10000, 2500)),
    Variant("patch: AUTOCOMMIT (no BEGIN/COMMIT)", patches=("autocommit",)),
    Variant("reference: SQL limit, one statement", sql_limit=True),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.experiments", description=__doc__)
    parser.add_argument("--orders", type=int, default=300_000, help="generated orders")
    parser.add_argument("--jobs", type=int, default=5_000, help="single jobs per variant")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; each variant keeps its best")
    parser.add_argument("--no-readme", action="store_true", help="do not write bench/README.md")
    return parser.parse_args(argv)


Measure = Callable[[Bench, Variant, str], Awaitable[Outcome]]


def per_order(jobs: int) -> Measure:
    tuning = load_settings().worker
    bare_tuning = ["--poll-delay", str(tuning.poll_delay_s), "--max-jobs", str(tuning.concurrency)]

    async def run(bench: Bench, variant: Variant, label: str) -> Outcome:
        if variant.bare:
            args = functools.partial(drain.noop_worker_args, bench, extra=bare_tuning)
            return await drain.single_jobs(bench, label, jobs, NOOP_FUNCTION, args)
        return await drain.single_jobs(
            bench, label, jobs, SINGLE_JOB, lambda _: [*variant.module, "worker"], **variant.env
        )

    return run


async def batch(bench: Bench, variant: Variant, label: str) -> Outcome:
    if variant.sql_limit:
        seconds = await sql_limit(bench.engine)
        check = await verify_totals(bench.engine, bench.first_id, bench.last_id)
        return Outcome(bench.orders, seconds, verification=check)
    return await measure.batch_totals(bench, 1, label, variant.module, **variant.env)


@dataclass(slots=True)
class Kept:
    """A variant's best round, and the rate of every round (to show the noise)."""

    variant: Variant
    best: Outcome
    rates: list[float]


async def best_of(
    bench: Bench, kind: str, variants: list[Variant], run: Measure, rounds: int
) -> list[Kept]:
    kept = {variant.name: Kept(variant, Outcome(0, 1.0), []) for variant in variants}
    for round_number in range(1, rounds + 1):
        for number, variant in enumerate(variants):
            outcome = await run(bench, variant, f"{kind}-{number}-r{round_number}")
            say(f"  {kind} | {variant.name} | round {round_number}: {outcome.rate:,.0f}/s")
            entry = kept[variant.name]
            entry.rates.append(outcome.rate)
            if not entry.best.count or (outcome.ok, outcome.rate) > (
                entry.best.ok,
                entry.best.rate,
            ):
                entry.best = outcome
    return list(kept.values())


def table(kind: str, found: list[Kept], reference: str, reference_rate: float) -> str:
    unit = "jobs/s" if kind == "per-order" else "orders/s"
    lines = [
        f"| {kind} variant | {unit}, best | every round | vs defaults | vs {reference} "
        "| worker CPU | Redis cmds/job | checked |",
        "|---|---|---|---|---|---|---|---|",
    ]
    defaults = found[0].best.rate
    for entry in found:
        outcome = entry.best
        cpu = sum(outcome.worker_cpu_s) / outcome.count * 1000
        cpu_text = f"{cpu:.2f} ms/job" if kind == "per-order" else f"{cpu * 1000:.0f} ms/1k orders"
        if not outcome.worker_cpu_s:  # the SQL limit: no worker
            cpu_text = ""
        commands = ""
        if outcome.redis_commands is not None:
            commands = f"{outcome.redis_commands / outcome.count:.1f}"
        rounds = ", ".join(f"{rate:,.0f}" for rate in entry.rates)
        lines.append(
            f"| {entry.variant.name} | {outcome.rate:,.0f} | {rounds} "
            f"| {outcome.rate / defaults:.2f}x | {outcome.rate / reference_rate:.2f}x "
            f"| {cpu_text} | {commands} | {'verified' if outcome.ok else '**MISMATCH**'} |"
        )
    return "\n".join(lines)


async def experiment(args: argparse.Namespace, servers: BenchServers, log_dir: Path) -> str:
    async with open_bench(servers, args.orders, log_dir) as bench:
        say(f"- per-order jobs: {len(PER_ORDER)} variants x {args.rounds} rounds ...")
        singles = await best_of(bench, "per-order", PER_ORDER, per_order(args.jobs), args.rounds)
        say(f"- batch, 1 replica: {len(BATCH)} variants x {args.rounds} rounds ...")
        batches = await best_of(bench, "batch", BATCH, batch, args.rounds)
    bare_rate = next(entry.best.rate for entry in singles if entry.variant.bare)
    limit_rate = next(entry.best.rate for entry in batches if entry.variant.sql_limit)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"Run of **{stamp}**: {args.orders:,} orders, {args.jobs:,} single jobs per variant, "
            f"best of {args.rounds} interleaved rounds; each table's last row is its reference.",
            f"Machine: {machine()}. Worker CPU is per process life, start-up included "
            "(~1 s CPU for orderworker, ~0.3 s for bare arq).",
            "",
            table("per-order", singles, "bare arq", bare_rate),
            "",
            table("batch", batches, "SQL limit", limit_rate),
        ]
    )


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_dir = RESULTS_DIR / ("experiments-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))
    started = time.monotonic()
    say(f"bytecode cache for child processes warmed in {warm_bytecode_cache():.1f}s")
    exit_on_sigterm()
    try:
        with (
            bench_servers("bench-experiments") as servers,
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        ):
            section = runner.run(experiment(args, servers, log_dir))
    finally:
        kill_all()
    print(section)
    (log_dir / "experiments.md").write_text(section + "\n")
    if not args.no_readme:
        readme = Path(__file__).with_name("README.md")
        text = replace_between(readme.read_text(), EXPERIMENTS_START, EXPERIMENTS_END, section)
        readme.write_text(text)
        say("bench/README.md updated")
    say(f"finished in {time.monotonic() - started:.0f}s; logs in {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
