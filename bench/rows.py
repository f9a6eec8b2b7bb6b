"""From measured outcomes to table rows: each rate against its baseline, each target checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.measure import Outcome
from bench.report import Row
from worker.settings import Settings

BATCH_TARGET = 0.5  # of the SQL limit (aim: 0.8)
BATCH_AIM = 0.8
JOBS_TARGET = 0.6  # of the bare arq no-op rate, same tuning
METRICS_TARGET = 0.97  # metrics on, of the same drain with them off: a cost under 3%
SUBMIT_TARGET = 20_000.0  # orders/s
RSS_TARGET_MIB = 100.0


@dataclass(slots=True)
class Results:
    orders: int
    versions: tuple[str, str]  # PostgreSQL's, Redis's
    sql_limits: dict[int, Outcome] = field(default_factory=dict)  # by the batch row it precedes
    batch: dict[int, Outcome] = field(default_factory=dict)
    ceiling: Outcome | None = None  # the replicas' sub-chunk statements with nothing around them
    submit: Outcome | None = None
    jobs: Outcome | None = None
    jobs_metrics: Outcome | None = None  # the jobs row again, with /metrics served and scraped
    noop: Outcome | None = None
    problems: list[str] = field(default_factory=list)  # of measurements without an Outcome

    def outcomes(self) -> list[Outcome]:
        found = [self.submit, self.jobs, self.jobs_metrics, self.noop, self.ceiling]
        found += self.sql_limits.values()
        found += self.batch.values()
        return [outcome for outcome in found if outcome is not None]


def rate_row(name: str, outcome: Outcome, noun: str, note: str, **details: Any) -> Row:
    """A row of `outcome.count` orders or jobs at a rate per second; its check leads the note."""
    count, note = f"{outcome.count:,} {noun}", checked(outcome, note)
    return Row(name, count, outcome.seconds, outcome.rate, f"{noun}/s", note=note, **details)


def held_to(
    name: str,
    outcome: Outcome,
    noun: str,
    note: str,
    *,
    baseline: tuple[Outcome, str],
    target: float,
    target_text: str,
) -> Row:
    """A rate row that passes at `target` times its baseline's rate (`baseline`: the outcome and
    its name), and only if its own check passes too."""
    ratio = outcome.rate / baseline[0].rate
    passed = ratio >= target and outcome.ok
    details = {"ratio": ratio, "baseline": baseline[1], "target": target_text, "passed": passed}
    return rate_row(name, outcome, noun, note, **details)


def checked(outcome: Outcome, note: str) -> str:
    if outcome.verification is None:
        return note
    status = "totals verified" if outcome.ok else "**" + outcome.verification.describe() + "**"
    problems = "; ".join(outcome.problems)
    return "; ".join(part for part in (status, problems, note) if part)


def build_rows(results: Results, settings: Settings) -> list[Row]:
    submit = results.submit
    assert submit is not None
    rows = _batch_rows(results, settings) + _job_rows(results, settings)
    rows.append(
        rate_row(
            "CLI submit: `totals --all --no-wait` (no worker)",
            submit,
            "orders",
            target=f">= {SUBMIT_TARGET:,.0f} orders/s",
            passed=submit.rate >= SUBMIT_TARGET,
            note=f"{submit.note}; keyset pages + pipelined enqueue",
        )
    )
    return rows + _memory_rows(results)


def _batch_rows(results: Results, settings: Settings) -> list[Row]:
    """Each batch row after the SQL limit measured right before it, its baseline."""
    rows = []
    for replicas, outcome in sorted(results.batch.items()):
        limit = results.sql_limits[replicas]
        name = "SQL limit: one INSERT ... SELECT SUM ... GROUP BY ... ON CONFLICT"
        note = "measured right before, as the baseline of the next row"
        rows += [
            rate_row(name, limit, "orders", note),
            held_to(
                f"`totals --all`, {replicas} worker replica{'s' if replicas > 1 else ''}",
                outcome,
                "orders",
                f"CLI wall time: submit + wait; {outcome.note}",
                baseline=(limit, "SQL limit"),
                target=BATCH_TARGET,
                target_text=f">= {BATCH_TARGET}x (aim {BATCH_AIM}x)",
            ),
        ]
    if results.ceiling is not None and results.sql_limits:
        limit = results.sql_limits[max(results.sql_limits)]
        sessions = settings.database.batch_connection_count()  # as bench/run.py measured it
        ratio = results.ceiling.rate / limit.rate
        note = "no queue, replica or CLI: what the batch rows can reach; against the last SQL limit"
        rows.append(
            rate_row(
                f"sub-chunk statements alone, {sessions} sessions at once",
                results.ceiling,
                "orders",
                note,
                ratio=ratio,
                baseline="SQL limit",
            )
        )
    return rows


def _job_rows(results: Results, settings: Settings) -> list[Row]:
    """Single jobs on one replica, then the bare arq worker with the same tuning."""
    assert results.jobs is not None and results.noop is not None
    noop, jobs = results.noop, results.jobs
    tuning = f"poll {settings.worker.poll_delay_s:g}s, max_jobs {settings.worker.concurrency}"
    rows = [_drain_row("`compute_order_total` jobs, 1 replica", jobs, (noop, "bare arq"))]
    if results.jobs_metrics is not None:
        name = "the same jobs, metrics on (/metrics scraped every second)"
        baseline = (jobs, "metrics off")
        rows.append(_drain_row(name, results.jobs_metrics, baseline, METRICS_TARGET, "cost < 3%"))
    note = f"{tuning}: baseline for the jobs row; {_drain_note(noop)}"
    return [*rows, rate_row("bare arq worker, no-op jobs, same tuning", noop, "jobs", note)]


def _drain_row(
    name: str,
    outcome: Outcome,
    baseline: tuple[Outcome, str],
    target: float = JOBS_TARGET,
    why: str = "",
) -> Row:
    """A single-job drain held to `target` times its baseline's rate."""
    text = f">= {target}x" + (f" ({why})" if why else "")
    note = _drain_note(outcome)
    return held_to(name, outcome, "jobs", note, baseline=baseline, target=target, target_text=text)


def _drain_note(outcome: Outcome) -> str:
    """Start-up, the rate after it, and the worker's CPU (first result to exit) and Redis
    commands per job."""
    steady = outcome.count / outcome.steady_seconds if outcome.steady_seconds else 0.0
    parts = []
    if outcome.worker_cpu_s:
        per_job_ms = (outcome.worker_cpu_s[0] - outcome.startup_cpu_s) / outcome.count * 1000
        parts.append(f"{per_job_ms:.2f} ms worker CPU per job")
    if outcome.redis_commands is not None:
        parts.append(f"{outcome.redis_commands / outcome.count:.1f} Redis commands per job")
    return f"{outcome.note}; {steady:,.0f} jobs/s after it; " + ", ".join(parts)


def _memory_rows(results: Results) -> list[Row]:
    workers = [
        (rss, f"batch, {replicas} replica(s)")
        for replicas, outcome in results.batch.items()
        for rss in outcome.worker_rss_mib
    ]
    if results.jobs is not None:
        workers += [(rss, "single jobs") for rss in results.jobs.worker_rss_mib]
    cli_runs = [(outcome, "totals --all") for outcome in results.batch.values()]
    if results.submit is not None:
        cli_runs.append((results.submit, "totals --all --no-wait"))
    clis = [(run.cli_rss_mib, where) for run, where in cli_runs if run.cli_rss_mib is not None]
    rows = []
    for name, measured in (("worker", workers), ("CLI", clis)):
        peak, where = max(measured)
        rows.append(
            Row(
                f"peak RSS, {name} (highest of {len(measured)} processes)",
                "",
                None,
                peak,
                "MiB",
                target=f"<= {RSS_TARGET_MIB:g} MiB",
                passed=peak <= RSS_TARGET_MIB,
                note=f"highest in {where}; all: " + ", ".join(f"{rss:.0f}" for rss, _ in measured),
            )
        )
    return rows
