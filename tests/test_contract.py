"""The command contract: one payload model per kind, strict types, bounded values, short
refusals that name the field."""

from __future__ import annotations

import json

import pytest

import engine.commands  # noqa: F401 (registers the handlers)
from contract import payloads
from contract.payloads import PayloadError, check, parse
from engine import registry


def refusal(kind: str, raw: str) -> str:
    with pytest.raises(PayloadError) as err:
        parse(kind, raw)
    return str(err.value)


def test_every_engine_handler_has_a_contract_payload_and_no_contract_kind_lacks_a_handler():
    assert set(registry.kinds(include_debug=True)) == set(payloads.PAYLOADS)


@pytest.mark.parametrize(
    "kind, raw, field",
    [
        ("checkpoint.activate", '{"checkpoint_id": 99999999999999999999}', "checkpoint_id"),
        ("checkpoint.activate", '{"checkpoint_id": true}', "checkpoint_id"),
        ("checkpoint.activate", '{"checkpoint_id": "1"}', "checkpoint_id"),
        ("checkpoint.activate", '{"checkpoint_id": 0}', "checkpoint_id"),
        ("backtest.start", '{"symbol": "X", "timeframe": "1d", "cash": "Infinity"}', "cash"),
        ("backtest.start", '{"symbol": "X", "timeframe": "1d", "cash": Infinity}', "cash"),
        ("backtest.start", '{"symbol": "X", "timeframe": "1d", "fee_bps": NaN}', "fee_bps"),
        ("session.start", '{"symbol": "X", "timeframe": "1d", "feed": {"start_ts": -1e30}}',
         "feed.start_ts"),
        ("session.start", '{"symbol": "X", "timeframe": "1d", "feed": {"start_ts": -1}}', None),
        ("session.start", '{"symbol": "X", "timeframe": "1d", "colour": "red"}', "colour"),
        ("session.start", '{"symbol": "X", "timeframe": "1d", "slippage_bps": -1}', "slippage_bps"),
        ("session.train_manual", '{"session_id": 3, "action": "buy"}', "action"),
        ("model.save", '{"working_model_id": 2, "name": ""}', "name"),
    ],
)  # fmt: skip
def test_a_bad_field_is_refused_by_name(kind, raw, field):
    if field is None:
        parse(kind, raw)  # the boundary case is accepted
        return
    message = refusal(kind, raw)
    assert field in message and len(message) < 400


def test_json_nested_thousands_deep_is_refused_without_recursing():
    message = refusal("ping", '{"a": ' + "[" * 5000 + "]" * 5000 + "}")
    assert "recursion limit" in message and len(message) < 400


def test_a_huge_value_is_quoted_short_not_echoed():
    message = refusal("session.start", json.dumps({"symbol": "x" * 3_000_000, "timeframe": "1d"}))
    assert "symbol" in message and len(message) < 400


def test_a_payload_over_the_size_limit_is_refused_before_parsing():
    raw = " " * (payloads.MAX_PAYLOAD_BYTES + 1)
    assert "limit" in refusal("ping", raw + "{}")


def test_many_bad_fields_are_summarised():
    raw = json.dumps({f"f{i}": i for i in range(50)})
    message = refusal("ping", raw)
    assert "and 47 more" in message


def test_a_page_checks_what_it_submits_and_gets_json_ready_data():
    sent = check("backtest.start", {"symbol": "SPX", "timeframe": "1d",
                                    "signals": [(1_600_000_000_000, "BUY")]})  # fmt: skip
    assert sent == {"symbol": "SPX", "timeframe": "1d", "signals": [[1_600_000_000_000, "BUY"]]}
    with pytest.raises(PayloadError, match="fee_bps"):
        check("backtest.start", {"symbol": "SPX", "timeframe": "1d", "fee_bps": -1})


def test_a_million_bad_signals_are_one_short_refusal_not_a_million_errors():
    import time

    raw = json.dumps({"symbol": "X", "timeframe": "1d", "signals": [[1, "NOPE"]] * 600_000})
    started = time.perf_counter()
    message = refusal("backtest.start", raw)
    assert time.perf_counter() - started < 10  # was 11 s and 0.9 GB through pydantic's errors
    assert "signal 0 must be" in message and len(message) < 400


def test_ids_stop_where_the_integer_columns_do():
    parse("session.stop", json.dumps({"session_id": payloads.MAX_ID}))
    assert "session_id" in refusal("session.stop", json.dumps({"session_id": 2**31}))


def test_a_page_may_pass_numpy_numbers():
    import numpy as np

    assert check("session.stop", {"session_id": np.int64(3)}) == {"session_id": 3}


def test_control_characters_are_refused_in_text_and_quoted_in_field_names():
    assert "name" in refusal("model.save", json.dumps({"working_model_id": 1, "name": "a\x00b"}))
    message = refusal("ping", json.dumps({"a\x00b": 1}))
    assert "\x00" not in message and "'a\\x00b'" in message  # PostgreSQL stores no NUL
