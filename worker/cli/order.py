"""`orderworker order place`: one order through the queue."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from jobs.client import JobOutcome
from jobs.errors import BAD_INPUT_CODES
from jobs.models import PlaceOrderPayload
from jobs.validation import validated
from worker.cli.exits import EXIT_FAILED, EXIT_USAGE, UsageError, reports_errors
from worker.cli.numbers import ascii_int
from worker.cli.resources import producer
from worker.cli.runtime import configured, run_async
from worker.settings import Settings

order_app = typer.Typer(help="Orders through the queue.", no_args_is_help=True)


def parse_item(value: str) -> dict[str, int]:
    item_id, _, quantity = (ascii_int(part) for part in value.partition(":"))
    if item_id is None or quantity is None:
        raise UsageError(f"--item {value!r}: expected ITEM_ID:QUANTITY, e.g. 3:2")
    return {"item_id": item_id, "quantity": quantity}


@order_app.command("place")
@reports_errors
def order_place(
    customer: Annotated[int, typer.Option(help="Customer id.")],
    item: Annotated[list[str], typer.Option(help="ITEM_ID:QUANTITY; repeat for more lines.")],
    idempotency_key: Annotated[str | None, typer.Option(help="Repeat-safe key.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait.")] = 60.0,
) -> None:
    """Enqueue place_order, wait for it, print the order id and total."""
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
    idempotency_key: str | None,
    as_json: bool,
    timeout: float,
) -> None:
    outcome = run_async(place_order(settings, customer, lines, idempotency_key, timeout))
    if as_json:
        body = (
            outcome.result
            if outcome.success
            else {"job_id": outcome.job_id, "error": outcome.result}
        )
        typer.echo(json.dumps(body))
    elif outcome.success:
        typer.echo(f"order {outcome.result['order_id']} placed, total {outcome.result['total']}")
    if not outcome.success:
        code = outcome.result.get("code", "")
        typer.echo(f"orderworker: {code}: {outcome.result.get('message')}", err=True)
        raise typer.Exit(EXIT_USAGE if code in BAD_INPUT_CODES else EXIT_FAILED)


async def place_order(
    settings: Settings,
    customer_id: int,
    items: list[dict[str, int]],
    idempotency_key: str | None,
    timeout_s: float,
) -> JobOutcome:
    async with producer(settings) as client:
        job_id = await client.place_order(customer_id, items, idempotency_key)
        return await client.wait(job_id, timeout_s)
