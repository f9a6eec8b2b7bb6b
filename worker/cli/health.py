"""`orderworker health`: is a live replica reporting? `--live` and `--ready` are the probes an
orchestrator runs: this host's replica loop is turning (no server needed), and PostgreSQL and
Redis answer now. Imports stay light: the probes run every few seconds."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

import typer

from worker.cli.exits import EXIT_FAILED, reports_errors, show_error
from worker.liveness import live_replicas


@reports_errors
def health(
    as_json: Annotated[bool, typer.Option("--json", help="List replicas as JSON.")] = False,
    local: Annotated[
        bool, typer.Option("--local", help="Only replicas on this host (container healthchecks).")
    ] = False,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Liveness probe: a replica on this host turned its poll loop lately. "
            "Reads no server.",
        ),
    ] = False,
    ready: Annotated[
        bool,
        typer.Option("--ready", help="Readiness probe: PostgreSQL and Redis answer now."),
    ] = False,
) -> None:
    """Exit 0 if a live worker replica is reporting, 1 otherwise."""
    if not (live or ready):
        from worker.cli.health_checks import report_replicas  # settings and Redis

        report_replicas(as_json, local)
        return
    raise typer.Exit(probe(as_json, live=live, ready=ready))


def probe(as_json: bool, *, live: bool, ready: bool) -> int:
    """The probes asked for, each on its own lines (or all in one JSON object): the exit code."""
    report: dict[str, Any] = {}
    lines: list[tuple[bool, str]] = []
    if live:
        replicas = live_replicas()
        report["live"] = [asdict(replica) for replica in replicas]
        lines += [
            (True, f"live: {r.replica_id} turned its loop {r.last_turn_age_s:.1f}s ago")
            for r in replicas
        ]
        if not replicas:
            lines.append((False, "not live: no replica on this host turned its loop lately"))
    if ready:
        from worker.cli.health_checks import check_readiness  # settings, asyncpg and Redis

        checks = check_readiness()
        report["ready"] = [{**asdict(check), "ok": check.ok} for check in checks]
        lines += [
            (True, f"ready: {c.where} answered in {c.elapsed_ms:g} ms")
            if c.ok
            else (False, f"not ready: {c.where}: {c.error}")
            for c in checks
        ]
    failing = [line for ok, line in lines if not ok]
    if as_json and failing:  # the one error path: the report beside the error object
        code = "not_live" if live and not report["live"] else "not_ready"
        said = code.replace("_", " ") + ": "  # the code says it already: not twice on one line
        message = "; ".join(line.removeprefix(said) for line in failing)
        show_error(code, message, {"healthy": False, **report})
    elif as_json:
        typer.echo(json.dumps({"healthy": True, **report}))
    else:
        for ok, line in lines:
            typer.echo(line, err=not ok)
    return EXIT_FAILED if failing else 0
