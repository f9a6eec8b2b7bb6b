"""Start-up: a command imports only what it needs. `orderworker --help` imports no command module,
a command only its own, and health's probes neither SQLAlchemy nor structlog (nor, for
`--live`, any client or the settings). Each is checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from worker.cli import COMMANDS, app

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sqlalchemy", "arq", "redis", "asyncpg", "structlog", "pydantic_settings", "alembic")
UNREACHABLE = {
    "ORDERWORKER_DATABASE_URL": "postgresql+asyncpg://probe@127.0.0.1:1/none",
    "ORDERWORKER_REDIS_URL": "redis://127.0.0.1:1/0",
}
# Runs the CLI in-process, then prints which modules it imported, whatever the exit code.
IMPORTED = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.__stderr__))
from worker.cli import app
app(prog_name="orderworker", args=sys.argv[1:])
"""


def imported_by(*args: str, **env: str) -> set[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("ORDERWORKER_")}
    result = subprocess.run(
        [sys.executable, "-c", IMPORTED, *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**clean, **env},
        timeout=60,
        check=False,
    )
    last = result.stderr.strip().splitlines()[-1]
    return set(json.loads(last))


def top_level(modules: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


def command_modules(modules: set[str]) -> set[str]:
    """Which of the commands' own modules (the table's targets) were imported."""
    targets = {entry.target.partition(":")[0] for entry in COMMANDS.values()}
    return modules & targets


def test_help_imports_no_command_module_and_no_heavy_library() -> None:
    modules = imported_by("--help")
    assert command_modules(modules) == set()
    assert not top_level(modules) & {*HEAVY, "pydantic", "rich"}


def test_a_command_imports_its_own_module_only() -> None:
    modules = imported_by("health", "--help")
    assert command_modules(modules) == {"worker.cli.health"}
    assert not top_level(modules) & set(HEAVY)


def test_the_liveness_probe_reads_no_settings_and_imports_no_client() -> None:
    modules = imported_by("health", "--live")
    assert "worker.settings" not in modules
    assert not top_level(modules) & set(HEAVY)


@pytest.mark.parametrize("args", [("health",), ("health", "--ready")], ids=["health", "ready"])
def test_health_and_readiness_import_neither_sqlalchemy_nor_structlog(
    args: tuple[str, ...],
) -> None:
    modules = imported_by(*args, **UNREACHABLE)
    assert "worker.settings" in modules  # they did load the settings and try the servers
    assert not top_level(modules) & {"sqlalchemy", "structlog", "alembic"}


def test_the_help_lists_every_command_with_its_own_first_line() -> None:
    """The table's lines are the commands' own: they cannot drift apart."""
    root = typer.main.get_command(app)
    context = root.make_context("orderworker", [], resilient_parsing=True)
    for name, entry in COMMANDS.items():
        command = root.get_command(context, name)  # type: ignore[attr-defined]
        assert command is not None and command.name == name
        assert command.get_short_help_str(limit=300) == entry.help, name
    listing = CliRunner().invoke(app, ["--help"], prog_name="orderworker")
    assert listing.exit_code == 0
    for name in COMMANDS:
        assert f"\n  {name} " in listing.output


def test_an_unknown_command_is_refused_with_a_suggestion() -> None:
    result = CliRunner().invoke(app, ["helth"], prog_name="orderworker")
    assert result.exit_code == 2
    assert "No such command 'helth'" in result.output
    assert "'health'" in result.output
