"""One way to check a job's keyword arguments, shared by the worker and every producer (the CLI
checks its input with it before enqueueing), so both refuse the same input with the same words."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from jobs.errors import InvalidPayloadError

PayloadT = TypeVar("PayloadT", bound=BaseModel)

# pydantic's prefix for an error raised by a validator: a detail of how the rule is written.
VALIDATOR_PREFIX = "Value error, "


def validated(payload_model: type[PayloadT], kwargs: dict[str, Any]) -> PayloadT:
    """The payload, or InvalidPayloadError naming every field that is wrong."""
    try:
        return payload_model.model_validate(kwargs)
    except ValidationError as error:
        raise InvalidPayloadError(validation_message(error)) from None


def validation_message(error: ValidationError) -> str:
    """`items[0].quantity: Input should be greater than or equal to 1; …` (values left out: they
    may be anything a producer sent)."""
    parts = []
    for problem in error.errors(include_url=False, include_input=False):
        message = problem["msg"].removeprefix(VALIDATOR_PREFIX)
        where = field_path(problem["loc"])
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def field_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path
