"""The benchmark, in one command: `uv run python -m bench.run [--orders N] [--quick] [--no-readme]`;
`--soak [--jobs N] [--kills N] [--freezes N] [--freeze-s S]` runs the soak instead (bench/soak.py),
`--latency [--orders N]` interactive latency with and without a batch (bench/latency.py),
`--startup` the CLI's start-up (bench/startup.py), `--peers` beside SAQ (bench/peers.py).

Loads the orders with set-based SQL, measures every row of the table in one run (so ratios compare
figures taken on the same noisy machine minutes apart), prints the table and writes it, with the
machine's description, into bench/README.md. See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path

import uvloop

from bench import drain, measure
from bench.latency import run_latency
from bench.measure import Outcome
from bench.noop_worker import NOOP_FUNCTION
from bench.peers import run_peers
from bench.processes import exit_on_sigterm, kill_all, warm_bytecode_cache
from bench.report import (
    RESULTS_DIR,
    Row,
    machine,
    markdown_table,
    results_section,
    write_readme,
)
from bench.rows import Results, build_rows
from bench.soak import fault_plan, run_soak
from bench.stack import Bench, BenchServers, bench_servers, open_bench, say, server_versions
from bench.startup import startup_rows
from worker.harness.servers import free_port
from worker.settings import Settings, load_settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--orders", type=int, help="generated orders (1,000,000)")
    parser.add_argument(
        "--jobs", type=int, help="single jobs per drain run (5,000); with --soak, 100,000"
    )
    parser.add_argument(
        "--quick", action="store_true", help="100,000 orders (or --orders), 1,000 jobs; no README"
    )
    parser.add_argument("--no-readme", action="store_true", help="do not write bench/README.md")
    parser.add_argument("--soak", action="store_true", help="the soak, with replicas killed")
    parser.add_argument("--kills", type=int, default=3, help="with --soak: replicas killed")
    parser.add_argument("--freezes", type=int, default=2, help="with --soak: replicas frozen")
    parser.add_argument("--freeze-s", type=float, default=10.0, help="with --soak: each freeze")
    parser.add_argument("--latency", action="store_true", help="latency, idle and during a batch")
    parser.add_argument("--startup", action="store_true", help="CLI start-up CPU only (~20 s)")
    parser.add_argument("--peers", action="store_true", help="beside SAQ, 3 rounds (~3 min)")
    args = parser.parse_args(argv)
    if args.jobs is None:
        args.jobs = 100_000 if args.soak else 5_000
    if args.quick:
        args.orders, args.jobs, args.no_readme = args.orders or 100_000, 1_000, True
    args.orders = args.orders or (300_000 if args.latency else 20_000 if args.peers else 1_000_000)
    if args.soak and args.jobs < 3:
        parser.error("--jobs must be at least 3")
    return args


def soak(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(
        prefix="orderworker-soak-", ignore_cleanup_errors=True
    ) as root:
        plan = fault_plan(args.kills, args.freezes)
        passed = asyncio.run(run_soak(args.jobs, plan, args.freeze_s, Path(root)))
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


def startup(args: argparse.Namespace, log_dir: Path) -> int:
    with bench_servers() as servers:
        rows = asyncio.run(startup_rows(servers.redis_url, log_dir))
    section = "\n".join(
        [
            "Reproduce with `uv run python -m bench.run --startup`.",
            "",
            f"- Machine: {machine()}",
            f"- Load average at the end (1 min; the machine is shared): {os.getloadavg()[0]:.1f}",
            "",
            markdown_table(rows),
        ]
    )
    print(section)
    if not args.no_readme:
        write_readme(section, "startup")
    return 0 if all(row.passed for row in rows) else 1


async def peers_run(args: argparse.Namespace, servers: BenchServers, log_dir: Path) -> str:
    async with open_bench(servers, args.orders, log_dir) as bench:
        versions = await server_versions(bench.engine, bench.redis)
        found = await run_peers(bench)
    command = "uv run python -m bench.run --peers"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    about = f"Run of **{when}**, {bench.orders:,} orders; {machine()}; {', '.join(versions)}."
    return f"Reproduce with `{command}`.\n\n{about}\n\n{found}"


def tuning_of(settings: Settings) -> str:
    worker, database, totals = settings.worker, settings.database, settings.totals
    return (
        f"chunk_size {totals.chunk_size}, subchunk_size {totals.subchunk_size}, "
        f"pool_size {database.pool_size}, concurrency (max_jobs) {worker.concurrency}, "
        f"poll_delay {worker.poll_delay_s:g}s, log level {settings.log.level}"
    )


async def measure_all(bench: Bench, args: argparse.Namespace, results: Results) -> None:
    for replicas in (1, 2):
        # The SQL limit again right before each batch: on a noisy machine a ratio is only as good
        # as the closeness in time of its two figures.
        results.sql_limits[replicas] = await measured("SQL limit", measure.sql_limit(bench))
        batch = measure.batch_totals(bench, replicas)
        results.batch[replicas] = await measured(f"totals --all, {replicas} replica(s)", batch)
    # What the batch rows could reach: a replica's statements at a replica's batch connections.
    settings = load_settings()
    connections = settings.database.batch_connection_count()
    ceiling = measure.subchunk_ceiling(bench, connections, settings.totals.subchunk_size)
    results.ceiling = await measured(f"sub-chunk statements alone, {connections} sessions", ceiling)
    results.submit = await measured("CLI submit rate (no worker)", measure.cli_submit(bench))
    jobs = args.jobs
    single = drain.single_jobs(bench, "jobs", jobs, "compute_order_total", ["worker", "worker"])
    results.jobs = await measured(f"{jobs:,} compute_order_total jobs, one replica", single)
    with_metrics = drain.single_jobs(
        bench, "jobs-metrics", jobs, "compute_order_total", ["worker", "worker"], free_port()
    )
    results.jobs_metrics = await measured("the same, metrics on and scraped", with_metrics)
    # arq tuning of the product's worker, for the bare arq worker it is compared with.
    worker = load_settings().worker
    tuned = ["--poll-delay", str(worker.poll_delay_s), "--max-jobs", str(worker.concurrency)]
    noop = drain.single_jobs(bench, "noop", jobs, NOOP_FUNCTION, ["bench.noop_worker", *tuned])
    results.noop = await measured("bare arq no-op worker, same tuning", noop)


async def measured(what: str, measurement: Awaitable[Outcome]) -> Outcome:
    say(f"- {what} ...")
    outcome = await measurement
    check = "" if outcome.verification is None else f", {outcome.verification.describe()}"
    say(f"  {outcome.rate:,.0f}/s{check}")
    return outcome


async def measure_run(
    args: argparse.Namespace, servers: BenchServers, log_dir: Path
) -> tuple[list[Row], Results]:
    async with open_bench(servers, args.orders, log_dir) as bench:
        results = Results(bench.orders, await server_versions(bench.engine, bench.redis))
        if args.latency:
            rows, ok = await run_latency(bench)
            results.problems = [] if ok else ["a latency check failed"]
        else:
            await measure_all(bench, args, results)
            rows = build_rows(results, load_settings())
    return rows, results


def report(rows: list[Row], results: Results, args: argparse.Namespace, private: bool) -> str:
    """The section for bench/README.md, also printed; written there unless --no-readme."""
    section = results_section(
        rows,
        orders=results.orders,
        servers="a private local stack" if private else "the configured servers",
        versions=results.versions,
        tuning=tuning_of(load_settings()),
    )
    if args.latency:
        command = f"uv run python -m bench.run --latency --orders {args.orders}"
        section = f"Reproduce with `{command}`.\n\n{section}"
    print(section)
    if not args.no_readme:
        write_readme(section, "latency" if args.latency else "results")
        say("bench/README.md updated")
    failed = [row.name for row in rows if row.passed is False]
    say("all targets met" if not failed else "targets missed: " + "; ".join(failed))
    return section


def peers_report(section: str, args: argparse.Namespace, log_dir: Path) -> int:
    print(section)
    (log_dir / "peers.md").write_text(section + "\n")
    if not args.no_readme:
        write_readme(section, "peers")
        say("bench/README.md updated")
    return 0


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.soak:
        return soak(args)
    log_dir = RESULTS_DIR / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    say(f"bytecode cache for child processes warmed in {warm_bytecode_cache():.1f}s")
    if args.startup:
        return startup(args, log_dir)
    exit_on_sigterm()
    try:
        # uvloop, as the product's processes run.
        with (
            bench_servers() as servers,
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        ):
            if args.peers:
                section = runner.run(peers_run(args, servers, log_dir))
            else:
                rows, results = runner.run(measure_run(args, servers, log_dir))
    finally:
        kill_all()
    if args.peers:
        return peers_report(section, args, log_dir)
    section = report(rows, results, args, servers.private)
    (log_dir / "results.md").write_text(section + "\n")
    code = 0 if all(outcome.ok for outcome in results.outcomes()) and not results.problems else 1
    say(f"finished in {time.monotonic() - started:.0f}s; logs and raw output in {log_dir}")
    return code


if __name__ == "__main__":
    sys.exit(run())
