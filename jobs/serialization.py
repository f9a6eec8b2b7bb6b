"""JSON for everything in Redis: job envelopes and results. Pickle is never accepted."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from jobs.errors import error_document

PICKLE_PROTOCOL_MARKER = 0x80
ENVELOPE_FIELDS = {"t", "f", "a", "k", "et"}
DEFAULT_MAX_PAYLOAD_BYTES = 1_048_576


def _to_json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, BaseException):
        return error_document(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def serialize(value: Any) -> bytes:
    return json.dumps(value, default=_to_json, separators=(",", ":")).encode()


def make_deserializer(max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Callable[[bytes], Any]:
    """A deserializer for arq that refuses pickle, non-UTF-8, non-JSON and oversized bytes.

    Floats are parsed as Decimal so no money ever passes through binary floating point.
    """

    def deserialize(data: bytes) -> Any:
        if len(data) > max_bytes:
            raise ValueError(f"payload is {len(data)} bytes, over the {max_bytes}-byte cap")
        decoded = _json_object(data, "payload")
        missing = ENVELOPE_FIELDS - decoded.keys()
        if "s" not in decoded and missing:  # "s" marks a stored result, which has more fields
            raise ValueError("envelope lacks fields: " + ", ".join(sorted(missing)))
        _check_envelope_types(decoded)
        return decoded

    return deserialize


def decode_result(data: bytes) -> dict[str, Any]:
    """A stored job result. Results are written by workers, not producers: no size cap applies."""
    return _json_object(data, "result")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    if data[:1] == bytes([PICKLE_PROTOCOL_MARKER]):
        raise ValueError(f"pickle {what}s are refused; send JSON")
    try:
        decoded = json.loads(data.decode("utf-8"), parse_float=Decimal)
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} is not UTF-8 text: {error}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} is not valid JSON: {error}") from None
    except RecursionError:
        raise ValueError(f"{what} nests too deeply") from None
    except ValueError:  # valid JSON, but an integer int() refuses to read (its digits limit)
        limit = sys.get_int_max_str_digits()
        raise ValueError(f"{what} holds a number over {limit} digits; no field takes one") from None
    except ArithmeticError:  # valid JSON, but an exponent Decimal cannot hold (1e99999999999...)
        raise ValueError(f"{what} holds a number out of any range; no field takes one") from None
    if not isinstance(decoded, dict):
        raise ValueError(f"{what} must be a JSON object (arq's envelope)")
    return decoded


def _check_envelope_types(envelope: dict[str, Any]) -> None:
    expected: dict[str, tuple[type, ...]] = {
        "f": (str,),
        "a": (list,),
        "k": (dict,),
        "t": (int, type(None)),
        "et": (int,),
    }
    for field, types in expected.items():
        value = envelope.get(field)
        if field in envelope and (not isinstance(value, types) or isinstance(value, bool)):
            names = " or ".join("null" if kind is type(None) else kind.__name__ for kind in types)
            raise ValueError(f"envelope field {field!r} must be {names}")


deserialize = make_deserializer()
