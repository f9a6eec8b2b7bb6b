"""`orderworker order place`: one order through the queue."""

from __future__ import annotations

import json
import shlex
import uuid
from typing import Annotated

import typer

from jobs.client import JobOutcome
from jobs.errors import BAD_INPUT_CODES
from jobs.models import PlaceOrderPayload
from jobs.validation import validated
from worker.cli.exits import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandError,
    UsageError,
    reports_errors,
)
from worker.cli.numbers import ascii_int, quoted
from worker.cli.resources import producer
from worker.cli.runtime import configured, run_async
from worker.settings import Settings

order_app = typer.Typer(help="Orders through the queue.", no_args_is_help=True)

GENERATED_KEY_PREFIX = "cli-"


def new_idempotency_key() -> str:
    """A key for a request the user gave none: repeating the command with it is safe."""
    return GENERATED_KEY_PREFIX + uuid.uuid4().hex


def parse_item(value: str) -> dict[str, int]:
    item_id, _, quantity = (ascii_int(part) for part in value.partition(":"))
    if item_id is None or quantity is None:
        raise UsageError(f"--item {quoted(value)}: expected ITEM_ID:QUANTITY, e.g. 3:2")
    return {"item_id": item_id, "quantity": quantity}


@order_app.command("place")
@reports_errors
def order_place(
    customer: Annotated[int, typer.Option(help="Customer id.")],
    item: Annotated[list[str], typer.Option(help="ITEM_ID:QUANTITY; repeat for more lines.")],
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="Names this request: a repeat returns the same order. Default: a new one."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait.")] = 60.0,
) -> None:
    """Enqueue place_order, wait for it, print the order id and total. Safe to retry: without
    --idempotency-key it makes a key and prints it (stderr), and the same command with that key
    returns the same order, never a second one."""
    lines = [parse_item(value) for value in item]
    # The worker's own check, so that both refuse the same input with the same code and words.
    validated(
        PlaceOrderPayload,
        {"customer_id": customer, "items": lines, "idempotency_key": idempotency_key},
    )
    # The input is checked before the settings are: bad input is reported first.
    place_and_report(customer, lines, idempotency_key, as_json, timeout)


@configured(database=False, redis=True)
def place_and_report(
    settings: Settings,
    customer: int,
    lines: list[dict[str, int]],
    given_key: str | None,
    as_json: bool,
    timeout: float,
) -> None:
    idempotency_key = given_key or new_idempotency_key()
    # stdout stays the result; --json carries the key as a field instead.
    announce = given_key is None and not as_json
    placing = place_order(settings, customer, lines, idempotency_key, timeout, announce=announce)
    retry = retry_command(customer, lines, idempotency_key)
    try:
        job_id, outcome = run_async(placing)
    except CommandError as error:  # the job may be queued already (a reply lost, WAIT short)
        message = f"{error.message}; if it was queued it still runs: to retry safely, {retry}"
        keyed = {**error.fields, "idempotency_key": idempotency_key}
        raise CommandError(error.code, message, error.exit_code, keyed) from None
    except KeyboardInterrupt:
        message = f"the order may still be placed; to retry safely or check, {retry}"
        keyed = {"idempotency_key": idempotency_key}
        raise CommandError("interrupted", message, EXIT_INTERRUPTED, keyed) from None
    if outcome is None:  # the job stays queued: say so, and how to retry without a second order
        message = (
            f"no result within {timeout:g}s: the order may still be placed (job {job_id} is"
            f" queued or running); to retry safely or check, {retry}"
        )
        keyed = {"job_id": job_id, "idempotency_key": idempotency_key}
        raise CommandError("timeout", message, EXIT_FAILED, keyed)
    if not outcome.success:
        code = str(outcome.result.get("code", ""))
        exit_code = EXIT_USAGE if code in BAD_INPUT_CODES else EXIT_FAILED
        keyed = {"job_id": outcome.job_id, "idempotency_key": idempotency_key}
        raise CommandError(code, str(outcome.result.get("message")), exit_code, keyed)
    if as_json:
        typer.echo(json.dumps({**outcome.result, "idempotency_key": idempotency_key}))
    else:
        typer.echo(f"order {outcome.result['order_id']} placed, total {outcome.result['total']}")


def retry_command(customer: int, lines: list[dict[str, int]], idempotency_key: str) -> str:
    """The same request under the same key: it returns the order if one was placed."""
    items = " ".join(f"--item {line['item_id']}:{line['quantity']}" for line in lines)
    return (
        f"repeat with the same key: orderworker order place --customer {customer} {items}"
        f" --idempotency-key {shlex.quote(idempotency_key)}"
    )


async def place_order(
    settings: Settings,
    customer_id: int,
    items: list[dict[str, int]],
    idempotency_key: str,
    timeout_s: float,
    *,
    announce: bool,
) -> tuple[str, JobOutcome | None]:
    """The job id and its outcome; None as the outcome when the wait ran out."""
    if announce:  # before the enqueue: whatever happens next, the key to retry with is shown
        typer.echo(f"idempotency key {idempotency_key}", err=True)
    job_id = uuid.uuid4().hex
    order = {"customer_id": customer_id, "items": items, "idempotency_key": idempotency_key}
    async with producer(settings) as client:
        try:
            return job_id, await client.enqueue_and_wait("place_order", timeout_s, job_id, **order)
        except TimeoutError:
            return job_id, None
