"""Every place where a replica changes arq's behaviour, checked against one arq version.

`SeamWorker` (worker.py) is arq's `Worker` with these overrides, each delegating to a small
collaborator that says which arq code it mirrors:

- the poll loop (polling.py): `main` and `_poll_iteration` (private) read and claim both lanes
  with one script (lane_claims.py), then wait for a wake-up (wakeups.py), a freed slot or the
  poll delay instead of sleeping;
- slots per lane (intake.py): arq's `max_jobs` in all, at most `batch_slots` of them batch jobs;
- Redis outages (backoff.py): the poll loop and the wake-up listener back off instead of dying;
- finishing jobs (finishing.py): `finish_job` stores a result with one script; `run_job` outlives
  a lost Redis; dead letters (dead_letters.py) for failures arq decides itself; retries and
  failures on the job's own lane, each final result announced on `<queue>:done`
  (lane_finish.py);
- leases (leases.py): each claim names its replica, which renews one liveness key; a claim whose
  replica stopped renewing is taken over, and every finish, retry and dead letter is written
  only while the claim still names this replica; results that meet a Redis outage are kept and
  written once it is back (pending.py);
- heartbeats (heartbeats.py): `record_health` also writes a per-replica key; `close` removes it;
- the drain (drain.py): SIGTERM stops claims, waits, cuts off and requeues without using a try;
- arq's wording (wording.py): the texts of `JobExecutionFailed` and of arq's failure log line.

A test fails when the installed arq is not `CHECKED_ARQ_VERSION`: read arq's source again, check
each override against it, then change the constant.
"""

from __future__ import annotations

from importlib.metadata import version

CHECKED_ARQ_VERSION = "0.28.0"


def installed_arq_version() -> str:
    return version("arq")
