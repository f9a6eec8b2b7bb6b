"""Every place where a replica changes arq's behaviour, checked against one arq version.

`SeamWorker` (worker.py) is arq's `Worker` with these overrides, each delegating to a small
collaborator that says which arq code it mirrors:

- taking jobs (intake.py): `start_jobs` claims a batch with one script and waits for a free slot;
  `_poll_iteration` (private) waits for a slot before arq polls;
- Redis outages (backoff.py): `_poll_iteration` backs off instead of dying;
- finishing jobs (finishing.py): `finish_job` stores a result with one script; `run_job` outlives
  a lost Redis; dead letters (dead_letters.py) for failures arq decides itself;
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
