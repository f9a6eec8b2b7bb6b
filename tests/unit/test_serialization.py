"""JSON in and out of Redis: what is written, and every kind of bytes the deserializer refuses."""

from __future__ import annotations

import json
import pickle
import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from arq.jobs import deserialize_job

from jobs.errors import UnknownItemError
from jobs.models import OrderTotalResult
from jobs.serialization import ENVELOPE_FIELDS, deserialize, make_deserializer, serialize
from tests.unit.conftest import result_bytes


def envelope(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "t": 1,
        "f": "compute_order_total",
        "a": [],
        "k": {"order_id": 7},
        "et": 1_700_000_000_000,
    }
    fields.update(overrides)
    return fields


def test_an_envelope_round_trips() -> None:
    assert deserialize(serialize(envelope())) == envelope()


def test_a_written_envelope_is_compact_utf8_json() -> None:
    data = serialize(envelope(k={"name": "Crème"}))
    assert json.loads(data.decode("utf-8")) == envelope(k={"name": "Crème"})
    assert b" " not in data


def test_arq_reads_the_envelope_with_this_deserializer() -> None:
    job = deserialize_job(serialize(envelope()), deserializer=deserialize)
    assert (job.function, list(job.args), job.kwargs, job.job_try) == (
        "compute_order_total",
        [],
        {"order_id": 7},
        1,
    )
    assert job.enqueue_time == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_a_stored_result_round_trips() -> None:
    stored = deserialize(result_bytes({"order_id": 1, "total": "30.00"}))
    assert stored["s"] is True
    assert stored["r"] == {"order_id": 1, "total": "30.00"}


def test_decimal_is_written_as_a_string() -> None:
    assert json.loads(serialize({"total": Decimal("30.00")})) == {"total": "30.00"}


def test_a_pydantic_model_is_written_in_json_mode() -> None:
    result = OrderTotalResult(order_id=1, total=Decimal("12"))
    assert json.loads(serialize({"r": result})) == {"r": {"order_id": 1, "total": "12.00"}}


def test_an_exception_is_written_as_an_error_document() -> None:
    written = json.loads(serialize([UnknownItemError("item 9 does not exist"), KeyError("x")]))
    assert written == [
        {"code": "unknown_item", "message": "item 9 does not exist"},
        {"code": "internal_error", "message": "KeyError: 'x'"},
    ]


def test_dates_and_tuples_are_written_as_json() -> None:
    moment = datetime(2024, 3, 18, 10, 30, tzinfo=UTC)
    assert json.loads(serialize({"at": moment, "ids": (1, 2)})) == {
        "at": "2024-03-18T10:30:00+00:00",
        "ids": [1, 2],
    }


def test_an_unknown_type_is_not_written() -> None:
    with pytest.raises(TypeError, match="object"):
        serialize({"thing": object()})


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_is_refused_by_name(protocol: int) -> None:
    with pytest.raises(ValueError, match="pickle"):
        deserialize(pickle.dumps(envelope(), protocol=protocol))


def test_protocol_zero_pickle_is_refused_too() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        deserialize(pickle.dumps(envelope(), protocol=0))


def test_non_utf8_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        deserialize(b'{"f": "\xc3\x28"}')


def test_random_bytes_only_ever_raise_value_error() -> None:
    generator = random.Random(20240318)
    for _ in range(500):
        with pytest.raises(ValueError):
            deserialize(generator.randbytes(generator.randint(0, 64)))


@pytest.mark.parametrize("data", [b"", b"{", serialize(envelope())[:-3], b"{'f': 1}", b"NaN!"])
def test_truncated_or_malformed_json_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        deserialize(data)


def test_a_number_too_long_to_read_is_refused_in_the_products_words() -> None:
    envelope = b'{"t": 1, "f": "compute_order_total", "a": [], "k": {"order_id": %s}, "et": 1}'
    with pytest.raises(ValueError) as refused:
        deserialize(envelope % (b"9" * 5000))
    assert str(refused.value) == "payload holds a number over 4300 digits; no field takes one"
    with pytest.raises(ValueError) as refused:
        deserialize(envelope % b"1e99999999999999999999")  # an exponent Decimal cannot hold
    assert str(refused.value) == "payload holds a number out of any range; no field takes one"


def test_deeply_nested_json_is_refused_as_a_value_error() -> None:
    with pytest.raises(ValueError):
        deserialize(b"[" * 100_000)


@pytest.mark.parametrize("data", [b"[1, 2]", b'"text"', b"null", b"42", b"true"])
def test_json_that_is_not_an_object_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        deserialize(data)


@pytest.mark.parametrize("field", sorted(ENVELOPE_FIELDS))
def test_an_envelope_missing_a_field_is_refused_naming_it(field: str) -> None:
    incomplete = envelope()
    del incomplete[field]
    with pytest.raises(ValueError, match=f"lacks fields: {field}$"):
        deserialize(serialize(incomplete))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("a", "order_id"),
        ("a", {"order_id": 1}),
        ("k", [1]),
        ("k", "order_id=1"),
        ("f", 3),
        ("f", None),
        ("t", "1"),
        ("t", True),
        ("et", True),
        ("et", "1700000000000"),
        ("et", 1.7e12),
        ("et", None),
    ],
)
def test_an_envelope_field_of_the_wrong_type_is_refused(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"envelope field '{field}' must be"):
        deserialize(serialize(envelope(**{field: value})))


def test_a_job_try_of_null_is_accepted() -> None:
    assert deserialize(serialize(envelope(t=None)))["t"] is None


def test_a_payload_over_the_cap_is_refused_before_parsing() -> None:
    capped = make_deserializer(max_bytes=1024)
    filler = 1024 - len(serialize(envelope(k={"note": ""})))
    at_cap = serialize(envelope(k={"note": "x" * filler}))
    assert len(at_cap) == 1024
    assert capped(at_cap)["k"]["note"] == "x" * filler
    with pytest.raises(ValueError, match="1025 bytes, over the 1024-byte cap"):
        capped(serialize(envelope(k={"note": "x" * (filler + 1)})))


def test_the_default_cap_is_one_mebibyte() -> None:
    with pytest.raises(ValueError, match="cap"):
        deserialize(b" " * (1_048_576 + 1))


def test_floats_are_parsed_as_decimal() -> None:
    decoded = deserialize(b'{"t":1,"f":"x","a":[],"k":{"price":0.1,"qty":2},"et":1}')
    price = decoded["k"]["price"]
    assert isinstance(price, Decimal)
    assert price == Decimal("0.1")
    assert price + Decimal("0.2") == Decimal("0.3")
    assert decoded["k"]["qty"] == 2
