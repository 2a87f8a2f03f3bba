"""RELIABILITY S6 (Kraken REST part): the REST response parsers survive garbage.

Every parser of `shared.venues.kraken.wire` gets (a) arbitrary JSON values and (b) the documented example answers
with one field replaced by an arbitrary JSON value or deleted; and the adapter's answer reader gets arbitrary
bytes. The only exception allowed is the validation error (`KrakenWireError`; the answer reader: the typed venue
errors). Writes reports/reliability/S6-kraken-rest.json. AETHER_SCALE multiplies the examples (nightly runs).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.venues.base import AmbiguousOutcome, TemporaryError
from shared.venues.kraken import wire
from shared.venues.kraken.adapter import _answer
from tests.reliability.conftest import RecordWriter
from tests.unit.test_kraken_rest_unit import QUERY_ORDERS

SCALE = int(os.environ.get("AETHER_SCALE", "1"))
EXAMPLES = 200 * SCALE

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["1.5", "NaN", "Infinity", "-0", "1e999999", "open", "buy", "closed", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)

TRADES = {
    "trades": {
        "THVRQM-33VKH-UCI7BS": {
            "ordertxid": "OQCLML-BW3P3-BUCMWZ",
            "pair": "XXBTZUSD",
            "time": 1688667796.8802,
            "type": "buy",
            "price": "30010.00000",
            "cost": "600.20000",
            "fee": "0.00000",
            "vol": "0.02000000",
            "trade_id": 39482674,
            "maker": True,
        }
    },
    "count": 1,
}
PAIRS = {
    "XXBTZUSD": {
        "altname": "XBTUSD",
        "wsname": "XBT/USD",
        "base": "XXBT",
        "quote": "ZUSD",
        "pair_decimals": 1,
        "lot_decimals": 8,
        "cost_decimals": 5,
        "ordermin": "0.00005",
        "costmin": "0.5",
        "tick_size": "0.1",
    }
}
# parser name -> (parser, a documented-shape example it accepts)
PARSERS: dict[str, tuple[Callable[[Any], object], Any]] = {
    "orders": (wire.orders, QUERY_ORDERS),
    "open_orders": (lambda r: wire.orders(r, "open"), {"open": QUERY_ORDERS}),
    "trades": (wire.trades, TRADES),
    "balances_ex": (wire.balances_ex, {"ZUSD": {"balance": "25435.21", "hold_trade": "8249.76"}}),
    "asset_pairs": (wire.asset_pairs, PAIRS),
    "asset_altnames": (wire.asset_altnames, {"XXBT": {"aclass": "currency", "altname": "XBT", "decimals": 10}}),
    "added_txid": (wire.added_txid, {"descr": {"order": "buy 1.25 XBTUSD @ limit 37500"}, "txid": ["OUF4EM-FRGI2"]}),
    "cancel_count": (wire.cancel_count, {"count": 1}),
    "trigger_time": (wire.trigger_time, {"currentTime": "2023-03-24T17:41:56Z", "triggerTime": "0"}),
    "websockets_token": (
        wire.websockets_token,
        {"token": "1Dwc4lzSwNWOAwkMdqhssNNFhs1ed606d1WcF3XfEMw", "expires": 900},
    ),
}
RESULTS: dict[str, list[int]] = {}  # parser -> [cases, crashes]


def _run(name: str, value: Any) -> None:
    parser = PARSERS[name][0]
    tally = RESULTS.setdefault(name, [0, 0])
    tally[0] += 1
    try:
        parser(value)
    except wire.KrakenWireError:
        pass
    except Exception:  # a crash: anything but the validation error
        tally[1] += 1
        raise


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


def _mutated(example: Any, path: tuple[Any, ...], replacement: Any, delete: bool) -> Any:
    value = copy.deepcopy(example)
    target = value
    for step in path[:-1]:
        target = target[step]
    if delete and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = replacement
    return value


FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)


@FUZZ
@given(name=st.sampled_from(sorted(PARSERS)), value=json_values)
def test_s6_arbitrary_json_is_only_a_validation_error(name: str, value: Any) -> None:
    _run(name, value)


@FUZZ
@given(name=st.sampled_from(sorted(PARSERS)), data=st.data(), replacement=json_values, delete=st.booleans())
def test_s6_documented_answers_with_a_field_broken(
    name: str, data: st.DataObject, replacement: Any, delete: bool
) -> None:
    example = PARSERS[name][1]
    path = data.draw(st.sampled_from(_paths(example)))
    _run(name, _mutated(example, path, replacement, delete))


@FUZZ
@given(
    body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
    status=st.sampled_from([200, 429, 500, 502]),
)
def test_s6_the_answer_reader_raises_only_typed_venue_errors(body: bytes, status: int) -> None:
    tally = RESULTS.setdefault("answer", [0, 0])
    tally[0] += 1
    response = httpx.Response(status, content=body)
    for call in ("read", "create"):
        try:
            errors, _ = _answer(response, "AddOrder", call)
            assert isinstance(errors, list)
        except (TemporaryError, AmbiguousOutcome):
            pass
        except Exception:
            tally[1] += 1
            raise


def test_s6_documented_examples_parse() -> None:
    for name, (parser, example) in PARSERS.items():
        assert parser(example) is not None, name


def test_s6_record(write_reliability_record: RecordWriter, reliability_seed: int) -> None:
    assert set(RESULTS) == {*PARSERS, "answer"}, "a fuzz test did not run"
    crashes = sum(c for _, c in RESULTS.values())
    write_reliability_record(
        {
            "id": "S6-kraken-rest",
            "seed": reliability_seed,
            "cases": sum(n for n, _ in RESULTS.values()),
            "violations": crashes,
            "parsers": {name: {"cases": n, "crashes": c} for name, (n, c) in sorted(RESULTS.items())},
        }
    )
    assert crashes == 0
