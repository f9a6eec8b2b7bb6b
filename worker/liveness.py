"""Liveness without a server: each replica touches a file of its own on every turn of its poll
loop, and `orderworker health --live` reads the files' ages on this host. A Redis or PostgreSQL
outage does not stop the loop (it backs off and turns again), so it does not fail the probe; a
frozen or stuck loop does. Cheap to import: the probe loads neither settings nor clients."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# A touch is a system call: at most one a second, however fast the loop turns.
TOUCH_EVERY_S = 1.0
# Files left by replicas that were killed are removed by the next replica that starts.
FORGET_AFTER_S = 3600.0


def liveness_dir() -> Path:
    # One folder per user: another user's replicas never make this one's unwritable.
    return Path(tempfile.gettempdir()) / f"orderworker-live-{os.getuid()}"


@dataclass(frozen=True, slots=True)
class LiveReplica:
    replica_id: str
    pid: int
    last_turn_age_s: float
    stale_after_s: float


class LivenessFile:
    """Written by a replica: created at the start of its poll loop, removed when it closes."""

    def __init__(
        self,
        replica_id: str,
        stale_after_s: float,
        on_error: Callable[[OSError], None],
        directory: Path | None = None,
    ) -> None:
        self.directory = directory or liveness_dir()
        self.path = self.directory / f"{replica_id}.json"
        self.replica_id = replica_id
        self.stale_after_s = stale_after_s
        self._on_error = on_error
        self._failing = False
        self._touched_at = 0.0

    def start(self) -> None:
        document: dict[str, object] = {
            "replica_id": self.replica_id,
            "pid": os.getpid(),
            "stale_after_s": self.stale_after_s,
        }
        written = self.path.with_suffix(".tmp")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            _forget_old_files(self.directory)
            written.write_text(json.dumps(document), encoding="utf-8")
            written.replace(self.path)  # whole or not at all: a probe never reads half a file
        except OSError as error:
            self.on_error(error)
        else:
            self._failing = False
        self._touched_at = time.monotonic()

    def turned(self) -> None:
        now = time.monotonic()
        if now - self._touched_at < TOUCH_EVERY_S:
            return
        self._touched_at = now
        try:
            os.utime(self.path)
        except FileNotFoundError:  # removed under us (a tmp cleaner): write it again
            self.start()
        except OSError as error:
            self.on_error(error)
        else:
            self._failing = False

    def stop(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as error:
            self.on_error(error)

    def on_error(self, error: OSError) -> None:
        """Reported once per spell of failures, not once a second."""
        if not self._failing:
            self._failing = True
            self._on_error(error)


def live_replicas(directory: Path | None = None) -> list[LiveReplica]:
    """Replicas on this host whose loop turned within their own bound, most recent first."""
    found = []
    now = time.time()
    for path in (directory or liveness_dir()).glob("*.json"):
        try:
            age_s = now - path.stat().st_mtime
            document = json.loads(path.read_text(encoding="utf-8"))
            replica = LiveReplica(
                replica_id=str(document["replica_id"]),
                pid=int(document["pid"]),
                last_turn_age_s=round(max(0.0, age_s), 3),
                stale_after_s=float(document["stale_after_s"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # removed meanwhile, or not one of ours: not a live replica's file
        if replica.last_turn_age_s <= replica.stale_after_s:
            found.append(replica)
    return sorted(found, key=lambda replica: (replica.last_turn_age_s, replica.replica_id))


def _forget_old_files(directory: Path) -> None:
    cutoff = time.time() - FORGET_AFTER_S
    for path in directory.glob("*.json"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            continue  # another replica removed it first
