"""The CLI's error surface without servers: usage errors and refused input are one line on stderr,
exit 2, and with --json exactly one `{"error": {"code", "message"}}` object on stdout."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import pytest
import typer

from jobs.batches import ResultsUnreachableError
from jobs.errors import InvalidPayloadError
from jobs.models import PlaceOrderPayload
from jobs.validation import validated
from worker.cli import app
from worker.cli.chunk_limits import check_chunk_size_for_ids_up_to
from worker.cli.exits import UsageError, fail, reports_errors, run_command
from worker.cli.totals import read_ids
from worker.harness.servers import free_port


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ORDERWORKER_* variable from the outside, both servers on closed ports, logging left
    alone."""
    for name in list(os.environ):
        if name.startswith("ORDERWORKER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ORDERWORKER_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    database_url = f"postgresql+asyncpg://app@127.0.0.1:{free_port()}/orders"
    monkeypatch.setenv("ORDERWORKER_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("worker.cli.runtime.configure_logging", lambda level, fmt: None)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    exit_code = run_command(typer.main.get_command(app), list(args))
    captured = capsys.readouterr()
    return exit_code, captured.out, captured.err


def one_error(out: str, err: str) -> dict[str, Any]:
    """The one error object on stdout, after checking stderr is one line saying the same."""
    [line] = out.splitlines()
    error: dict[str, Any] = json.loads(line)["error"]
    assert set(error) == {"code", "message"}
    assert err == f"orderworker: {error['code']}: {error['message']}\n"
    return error


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("order", "place", "--item", "1:1"), "Missing option '--customer'."),
        (("order", "place", "--customer", "x", "--item", "1:1"), "Invalid value for '--customer'"),
        (("totals", "1", "--bogus"), "No such option: --bogus"),
        (("totals", "\uff11"), "Invalid value for 'order_ids'"),  # a fullwidth one
        (("jobs", "failed", "--limit", "0"), "Invalid value for '--limit'"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2_with_one_json_object(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    exit_code, out, err = run(capsys, *args, "--json")

    assert exit_code == 2
    error = one_error(out, err)
    assert error["code"] == "usage"
    assert error["message"].startswith(expected)
    assert error["message"].endswith("--help')")


def test_without_json_a_usage_error_prints_nothing_on_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    exit_code, out, err = run(capsys, "order", "place", "--item", "1:1")

    assert exit_code == 2
    assert out == ""
    assert err == (
        "orderworker: usage: Missing option '--customer'. (see 'orderworker order place --help')\n"
    )


def test_a_json_word_after_the_separator_is_an_argument_not_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    exit_code, out, err = run(capsys, "totals", "--bogus", "--", "--json")

    assert exit_code == 2
    assert out == ""
    assert err.startswith("orderworker: usage: No such option: --bogus")


def test_help_still_works(capsys: pytest.CaptureFixture[str]) -> None:
    exit_code, out, err = run(capsys, "order", "place", "--help")

    assert exit_code == 0
    assert "--idempotency-key" in out
    assert err == ""


@pytest.mark.parametrize(
    ("items", "code", "message"),
    [
        (
            ("1:0",),
            "invalid_payload",
            "items[0].quantity: Input should be greater than or equal to 1",
        ),
        (("1:1", "1:2"), "invalid_payload", "duplicate item ids: 1"),
        (("x",), "usage", "--item 'x': expected ITEM_ID:QUANTITY, e.g. 3:2"),
        (("1:",), "usage", "--item '1:': expected ITEM_ID:QUANTITY, e.g. 3:2"),
        (("\u0661:1",), "usage", "--item '\u0661:1': expected ITEM_ID:QUANTITY, e.g. 3:2"),
        (("+1:1",), "usage", "--item '+1:1': expected ITEM_ID:QUANTITY, e.g. 3:2"),
        (  # longer than any id, and past int()'s own limit: one short line, not a traceback
            (f"{'9' * 5000}:1",),
            "usage",
            f"--item '{'9' * 40}'... (5,002 characters): expected ITEM_ID:QUANTITY, e.g. 3:2",
        ),
    ],
)
def test_bad_order_lines_are_refused_before_anything_is_enqueued(
    capsys: pytest.CaptureFixture[str], items: tuple[str, ...], code: str, message: str
) -> None:
    item_options = [word for item in items for word in ("--item", item)]
    exit_code, out, err = run(capsys, "order", "place", "--customer", "1", *item_options, "--json")

    assert exit_code == 2
    assert one_error(out, err) == {"code": code, "message": message}


def test_the_cli_refuses_a_payload_with_the_workers_own_code_and_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    kwargs = {"customer_id": 1, "items": [{"item_id": 1, "quantity": 0}], "idempotency_key": None}
    with pytest.raises(InvalidPayloadError) as refused:
        validated(PlaceOrderPayload, kwargs)

    exit_code, out, err = run(
        capsys, "order", "place", "--customer", "1", "--item", "1:0", "--json"
    )

    assert exit_code == 2
    assert one_error(out, err) == refused.value.to_document()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"1\n2\xff\n", "not UTF-8 text (byte 0xff at offset 3)"),
        ("1 \u0661\u0662\n".encode(), "line 1: '\u0661\u0662' is not an order id"),
        ("1\n\uff12\n".encode(), "line 2: '\uff12' is not an order id"),  # fullwidth
        (b"1\n-3\n", "line 2: '-3' is not an order id"),
        (b"1\n" + b"7" * 5000, f"line 2: '{'7' * 40}'... (5,000 characters) is not an order id"),
        (b"\n\n", "no order ids in it"),
    ],
)
def test_a_file_of_ids_must_be_utf8_text_of_ascii_digits(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(content)

    exit_code, out, err = run(capsys, "totals", "--file", str(path), "--json")

    assert exit_code == 2
    error = one_error(out, err)
    assert error["code"] in {"invalid_input", "usage"}
    assert error["message"].startswith(f"--file {path}")
    assert error["message"].endswith(message)


def test_a_chunk_over_the_payload_cap_is_refused_with_a_size_that_fits(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERWORKER_WORKER__MAX_PAYLOAD_BYTES", "2048")
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(str(10**9 + n) for n in range(1000)))  # 10 digits each

    exit_code, out, err = run(capsys, "totals", "--file", str(path), "--chunk-size", "500")

    assert exit_code == 2
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("orderworker: usage: a chunk of 500 ids would be a 5,")
    assert "over the worker's payload cap of 2,048 (ORDERWORKER_WORKER__MAX_PAYLOAD_BYTES)" in line
    suggested = line.removesuffix(" or less").rpartition(" ")[2]
    assert int(suggested) < 500

    # The suggested size passes the check: the command goes on to Redis, on a closed port here.
    exit_code, out, err = run(capsys, "totals", "--file", str(path), "--chunk-size", suggested)

    assert exit_code == 1
    assert err.startswith("orderworker: redis_unavailable: Redis at 127.0.0.1:")
    too_many = str(int(suggested) + 1)
    assert run(capsys, "totals", "--file", str(path), "--chunk-size", too_many)[0] == 2


def test_every_order_is_checked_against_the_cap_as_wide_as_its_largest_id() -> None:
    check_chunk_size_for_ids_up_to(10**9, 90, 2048)  # 90 ids of 10 digits: 131 + 989 bytes
    with pytest.raises(UsageError, match=r"a chunk of 200 ids would be a 2,330-byte job"):
        check_chunk_size_for_ids_up_to(10**9, 200, 2048)


@pytest.mark.parametrize("markup", [None, "rich"])
def test_a_group_called_without_a_command_shows_its_help_once_and_exits_2(
    capsys: pytest.CaptureFixture[str], markup: Literal["rich"] | None
) -> None:
    group = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=markup)

    @group.command()
    def hello() -> None:
        """Says hello."""

    @group.command()
    def bye() -> None:
        """Says bye."""

    exit_code = run_command(typer.main.get_command(group), [])
    captured = capsys.readouterr()

    assert exit_code == 2
    help_text = captured.out + captured.err
    assert help_text.count("Says hello.") == 1
    assert "orderworker: " not in help_text


def test_a_failure_given_no_code_is_named_by_its_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for exit_code, code in ((2, "usage"), (1, "failed"), (130, "interrupted")):
        with pytest.raises(typer.Exit) as stopped:
            fail("something", exit_code)
        assert stopped.value.exit_code == exit_code
        assert capsys.readouterr().err == f"orderworker: {code}: something\n"


def test_a_wait_that_lost_redis_is_redis_unavailable_and_names_the_batch(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lost(*args: object, **kwargs: object) -> None:
        raise ResultsUnreachableError("Redis unreachable for 30s")

    monkeypatch.setattr("worker.cli.totals.run_batch", lost)
    exit_code, out, err = run(capsys, "totals", "1", "2", "--json")

    assert exit_code == 1
    error = one_error(out, err)
    assert error["code"] == "redis_unavailable"
    assert error["message"].startswith("Redis unreachable for 30s; it runs on: follow it with: ")
    assert "orderworker totals status " in error["message"]


def test_ctrl_c_in_a_command_is_one_line_and_with_json_one_object(
    capsys: pytest.CaptureFixture[str],
) -> None:
    @reports_errors
    def interrupted(as_json: bool) -> None:
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as stopped:
        interrupted(as_json=True)
    captured = capsys.readouterr()
    assert stopped.value.exit_code == 130
    assert json.loads(captured.out) == {"error": {"code": "interrupted", "message": "interrupted"}}
    assert captured.err == "orderworker: interrupted: interrupted\n"


def test_a_file_of_ids_may_start_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes("\ufeff1\r\n2\r\n".encode())  # as Notepad saves it
    assert read_ids(str(path)) == [1, 2]


@pytest.mark.parametrize(
    ("typed", "shown"),
    [("0", "0"), ("9" * 100, f"{'9' * 40}... (100 characters)")],
)
def test_an_order_id_out_of_range_is_named_cut_short(
    capsys: pytest.CaptureFixture[str], typed: str, shown: str
) -> None:
    exit_code, out, err = run(capsys, "totals", typed, "--json")

    assert exit_code == 2
    assert one_error(out, err)["message"] == f"{shown} is not an order id (1 to {2**63 - 1})"
