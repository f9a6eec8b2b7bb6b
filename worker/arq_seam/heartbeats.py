"""Heartbeats: arq's queue-wide health key plus one key per replica (worker/health.py).

arq 0.28.0 `Worker.record_health` writes its key at most once per `health_check_interval`; the
replica's own key is written on the same beat, kept by the same rule here (arq's clock,
`_last_health_check`, is private).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from arq.worker import Worker

from worker import health
from worker.arq_seam.intake import running_jobs
from worker.metrics import SlotUse


class Heartbeats:
    def __init__(
        self, worker: Worker, replica_id: str, slot_use: Callable[[], SlotUse] | None = None
    ) -> None:
        self.worker = worker
        self.replica_id = replica_id
        self.slot_use = slot_use
        self.started_at = time.time()
        self._last_beat = 0.0

    def due(self) -> bool:
        """True once per health interval, on the call where arq's record_health writes too."""
        now = time.time()
        if now - self._last_beat < self.worker.health_check_interval:
            return False
        self._last_beat = now
        return True

    async def beat(self) -> None:
        ttl_s = 3 * self.worker.health_check_interval
        await health.beat(self.worker.pool, self.heartbeat(), ttl_s=ttl_s)

    async def forget(self) -> None:
        await health.forget(self.worker.pool, self.worker.queue_name, self.replica_id)

    def heartbeat(self) -> health.Heartbeat:
        worker = self.worker
        return health.Heartbeat(
            replica_id=self.replica_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queue_name=worker.queue_name,
            jobs_done=worker.jobs_complete,
            jobs_failed=worker.jobs_failed,
            jobs_retried=worker.jobs_retried,
            in_flight=len(running_jobs(worker.tasks)),
            last_beat=time.time(),
            started_at=self.started_at,
            lanes=self._lanes(),
        )

    def _lanes(self) -> dict[str, dict[str, int]]:
        if self.slot_use is None:
            return {}
        lanes = self.slot_use().lanes.items()
        return {lane: {"in_use": used, "slots": limit} for lane, (used, limit) in lanes}
