"""The liveness file: written when a replica's loop starts, touched as it turns (at most once a
second), removed when it closes; the probe lists only replicas within their own bound."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from worker.cli import app
from worker.liveness import FORGET_AFTER_S, LivenessFile, live_replicas, liveness_dir


def liveness(directory: Path, errors: list[OSError] | None = None) -> LivenessFile:
    sink = [] if errors is None else errors
    return LivenessFile("r1", stale_after_s=30, on_error=sink.append, directory=directory)


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_started_replica_is_live_and_a_stopped_one_is_gone(tmp_path: Path) -> None:
    file = liveness(tmp_path)
    file.start()
    [replica] = live_replicas(tmp_path)
    assert (replica.replica_id, replica.pid, replica.stale_after_s) == ("r1", os.getpid(), 30)
    assert 0 <= replica.last_turn_age_s < 5
    file.stop()
    assert live_replicas(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_a_replica_past_its_own_bound_is_not_live(tmp_path: Path) -> None:
    file = liveness(tmp_path)
    file.start()
    age(file.path, 31)
    assert live_replicas(tmp_path) == []


def test_a_turn_touches_the_file_at_most_once_a_second(tmp_path: Path) -> None:
    file = liveness(tmp_path)
    file.start()
    age(file.path, 31)
    file.turned()  # within a second of the start: no system call
    assert live_replicas(tmp_path) == []
    file._touched_at -= 1.0  # a second later
    file.turned()
    assert [replica.replica_id for replica in live_replicas(tmp_path)] == ["r1"]


def test_a_file_removed_under_a_replica_is_written_again(tmp_path: Path) -> None:
    file = liveness(tmp_path)
    file.start()
    file.path.unlink()
    file._touched_at -= 1.0
    file.turned()
    assert [replica.replica_id for replica in live_replicas(tmp_path)] == ["r1"]


def test_an_unwritable_folder_is_reported_once_and_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    errors: list[OSError] = []
    file = liveness(blocker / "live", errors)
    file.start()
    for _ in range(3):
        file._touched_at -= 1.0
        file.turned()
    file.stop()
    assert len(errors) == 1
    assert isinstance(errors[0], OSError)


def test_files_of_long_dead_replicas_are_forgotten_at_start(tmp_path: Path) -> None:
    dead = tmp_path / "dead.json"
    dead.write_text(json.dumps({"replica_id": "dead", "pid": 1, "stale_after_s": 30}))
    age(dead, FORGET_AFTER_S + 60)
    liveness(tmp_path).start()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["r1.json"]


def test_files_that_are_not_a_replicas_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "partial.json").write_text(json.dumps({"replica_id": "x"}))
    liveness(tmp_path).start()
    assert [replica.replica_id for replica in live_replicas(tmp_path)] == ["r1"]


def test_the_folder_is_per_user_under_the_temporary_folder() -> None:
    assert liveness_dir().name == f"orderworker-live-{os.getuid()}"


def test_the_probe_exits_0_for_a_live_replica_and_1_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    runner = CliRunner()
    absent = runner.invoke(app, ["health", "--live"], prog_name="orderworker")
    assert absent.exit_code == 1
    assert "not live: no replica on this host turned its loop lately" in absent.output

    file = LivenessFile("r1", stale_after_s=30, on_error=lambda error: None)
    file.start()
    live = runner.invoke(app, ["health", "--live", "--json"], prog_name="orderworker")
    file.stop()
    assert live.exit_code == 0, live.output
    body = json.loads(live.stdout)
    assert body["healthy"] is True
    assert [replica["replica_id"] for replica in body["live"]] == ["r1"]


def test_a_failed_probe_with_json_carries_the_error_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    absent = CliRunner().invoke(app, ["health", "--live", "--json"], prog_name="orderworker")
    assert absent.exit_code == 1
    message = "no replica on this host turned its loop lately"  # the code says "not live"
    body = json.loads(absent.stdout)
    assert body == {"healthy": False, "live": [], "error": {"code": "not_live", "message": message}}
    assert absent.stderr == f"orderworker: not_live: {message}\n"
