"""The benchmark, in one command: `uv run python -m bench.run [--orders N] [--quick] [--no-readme]`;
`--soak [--jobs N] [--kills N]` runs the soak instead (bench/soak.py).

Loads the orders with set-based SQL, measures every row of the table in one run (so ratios compare
figures taken on the same noisy machine minutes apart), prints the table and writes it, with the
machine's description, into bench/README.md. See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import uvloop

from bench import drain, measure
from bench.baselines import seed_approach, sql_limit, truncate_totals
from bench.measure import Bench, Outcome, open_bench, say
from bench.noop_worker import ARQ_DEFAULT_MAX_JOBS, ARQ_DEFAULT_POLL_DELAY_S, NOOP_FUNCTION
from bench.processes import exit_on_sigterm, kill_all, warm_bytecode_cache
from bench.report import RESULTS_DIR, markdown_table, results_section, write_readme
from bench.rows import Results, build_rows
from bench.soak import run_soak
from bench.stack import BenchServers, bench_servers, server_versions
from worker.harness.checks import check_totals
from worker.settings import Settings, load_settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--orders", type=int, help="generated orders (1,000,000)")
    parser.add_argument(
        "--jobs", type=int, help="single jobs per drain run (5,000); with --soak, 100,000"
    )
    parser.add_argument("--seed-orders", type=int, default=2_000, help="orders for the seed's way")
    parser.add_argument(
        "--quick", action="store_true", help="100,000 orders (or --orders), 1,000 jobs; no README"
    )
    parser.add_argument("--no-readme", action="store_true", help="do not write bench/README.md")
    parser.add_argument("--soak", action="store_true", help="the soak, with replicas killed")
    parser.add_argument("--kills", type=int, default=3, help="with --soak: replicas killed")
    args = parser.parse_args(argv)
    if args.jobs is None:
        args.jobs = 100_000 if args.soak else 5_000
    if args.quick:
        args.orders, args.jobs, args.no_readme = args.orders or 100_000, 1_000, True
    args.orders = args.orders or 1_000_000
    if args.soak and args.jobs < 3:
        parser.error("--jobs must be at least 3")
    return args


def soak(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="orderworker-soak-"))
    try:
        passed = asyncio.run(run_soak(args.jobs, args.kills, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


def tuning_of(settings: Settings) -> str:
    worker, database, totals = settings.worker, settings.database, settings.totals
    return (
        f"chunk_size {totals.chunk_size}, subchunk_size {totals.subchunk_size}, "
        f"pool_size {database.pool_size}, concurrency (max_jobs) {worker.concurrency}, "
        f"poll_delay {worker.poll_delay_s:g}s, log level {settings.log.level}"
    )


async def measure_all(
    bench: Bench, args: argparse.Namespace, settings: Settings, results: Results
) -> None:
    # arq tuning of the product's worker, for the bare arq worker it is compared with.
    tuned = ["--poll-delay", str(settings.worker.poll_delay_s)]
    tuned += ["--max-jobs", str(settings.worker.concurrency)]
    bare_args = functools.partial(drain.noop_worker_args, bench, extra=tuned)
    await measure_batches(bench, results)
    say("- CLI submit rate (no worker) ...")
    results.submit = await measure.cli_submit(bench)
    say(f"  {results.submit.rate:,.0f} orders/s")
    await measure_single_jobs(bench, args.jobs, tuned, results)
    for name, make_args, ready in (
        ("orderworker", product_args, drain.product_ready),
        ("bare arq", bare_args, drain.arq_ready),
    ):
        say(f"- {name} worker: start until ready, empty queue ...")
        start = await drain.idle_start(bench, f"start-{name.replace(' ', '-')}", make_args, ready)
        results.startup[name] = start
        say(f"  ready after {start.seconds_to_ready:.2f}s, {start.cpu_s:.2f}s CPU")
    say(f"- seed approach over {args.seed_orders:,} orders ...")
    await truncate_totals(bench.engine)
    order_ids = range(bench.first_id, bench.first_id + args.seed_orders)
    seconds = await seed_approach(bench.database_url, order_ids)
    check = await check_totals(bench.engine, order_ids[0], order_ids[-1])
    results.seed = Outcome(args.seed_orders, seconds, verification=check)
    say(f"  {results.seed.rate:,.0f} orders/s, {check.describe()}")


def product_args(queue: str) -> list[str]:
    return ["worker", "worker"]  # `python -m worker worker` is `orderworker worker`


async def measure_batches(bench: Bench, results: Results) -> None:
    for replicas in (1, 2):
        # The SQL limit again right before each batch: on a noisy machine a ratio is only as good
        # as the closeness in time of its two figures.
        say("- SQL limit ...")
        seconds = await sql_limit(bench.engine)
        check = await check_totals(bench.engine, bench.first_id, bench.last_id)
        results.sql_limits[replicas] = Outcome(bench.orders, seconds, verification=check)
        say(f"  {bench.orders / seconds:,.0f} orders/s, {check.describe()}")
        say(f"- totals --all, {replicas} replica(s) ...")
        outcome = await measure.batch_totals(bench, replicas)
        results.batch[replicas] = outcome
        assert outcome.verification is not None
        say(f"  {outcome.rate:,.0f} orders/s, {outcome.verification.describe()}")


async def measure_single_jobs(bench: Bench, jobs: int, tuned: list[str], results: Results) -> None:
    say(f"- {jobs:,} compute_order_total jobs, one replica ...")
    results.jobs = await drain.single_jobs(bench, "jobs", jobs, "compute_order_total", product_args)
    assert results.jobs.verification is not None
    say(f"  {results.jobs.rate:,.0f} jobs/s, {results.jobs.verification.describe()}")
    for key, extra in (("same", tuned), ("defaults", [])):
        say(f"- bare arq no-op worker ({key} settings), {jobs:,} jobs ...")
        args = functools.partial(drain.noop_worker_args, bench, extra=extra)
        outcome = await drain.single_jobs(bench, f"noop-{key}", jobs, NOOP_FUNCTION, args)
        results.noop[key] = outcome
        say(f"  {outcome.rate:,.0f} jobs/s")


@dataclass(frozen=True, slots=True)
class Measured:
    results: Results
    orders: int
    versions: tuple[str, str]


async def measure_run(args: argparse.Namespace, servers: BenchServers, log_dir: Path) -> Measured:
    settings = load_settings()
    async with open_bench(servers, args.orders, log_dir) as bench:
        versions = await server_versions(bench.engine, servers.redis_url)
        results = Results(arq_defaults=(ARQ_DEFAULT_POLL_DELAY_S, ARQ_DEFAULT_MAX_JOBS))
        await measure_all(bench, args, settings, results)
    return Measured(results, bench.orders, versions)


def report(measured: Measured, args: argparse.Namespace, private: bool, log_dir: Path) -> int:
    settings = load_settings()
    results = measured.results
    rows = build_rows(results, settings)
    print(markdown_table(rows))
    section = results_section(
        rows,
        orders=measured.orders,
        servers="a private local stack" if private else "the configured servers",
        versions=measured.versions,
        tuning=tuning_of(settings),
    )
    (log_dir / "results.md").write_text(section + "\n")
    if not args.no_readme:
        write_readme(section)
        say("bench/README.md updated")
    failed = [row.name for row in rows if row.passed is False]
    say("all targets met" if not failed else "targets missed: " + "; ".join(failed))
    return 0 if all(outcome.ok for outcome in results.outcomes()) else 1


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.soak:
        return soak(args)
    log_dir = RESULTS_DIR / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    say(f"bytecode cache for child processes warmed in {warm_bytecode_cache():.1f}s")
    exit_on_sigterm()
    try:
        # uvloop, as the product's processes run.
        with (
            bench_servers() as servers,
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        ):
            measured = runner.run(measure_run(args, servers, log_dir))
    finally:
        kill_all()
    code = report(measured, args, servers.private, log_dir)
    say(f"finished in {time.monotonic() - started:.0f}s; logs and raw output in {log_dir}")
    return code


if __name__ == "__main__":
    sys.exit(run())
