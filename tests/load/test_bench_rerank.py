"""The Facet-vs-Infinity benchmark's pure logic: option parsing, the Rerank calls it makes from
(query, candidates) rows, the rows of its table, Infinity's command line, and that a failed HTTP
call is counted by the shared load generator instead of ending the run. No timing is asserted;
the expected numbers are worked out by hand in each test."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from load.bench_infinity import HTTPCallError, InfinityModel, infinity_command
from load.bench_rerank import parse_int_list, rerank_calls
from load.harness import LoadResult, callers_for_duration, overhead_row, ratio_row


def test_caller_counts_parse_in_order_without_duplicates() -> None:
    assert parse_int_list("1,8,32", "--callers") == (1, 8, 32)
    assert parse_int_list(" 8, 8,1,", "--callers") == (8, 1)


@pytest.mark.parametrize(("text", "says"), [("0", "below 1"), ("1,x", "'x' is not an integer"), (" , ", "at least one")])
def test_bad_caller_counts_name_the_option(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        parse_int_list(text, "--callers")
    assert str(caught.value).startswith("--callers: ")


ROWS = [
    ("where is paris?", ["In France.", "Bananas are yellow."]),
    ("what is red?", ["A colour.", "In France."]),  # shares a candidate with the first row
    ("", ["never used"]),  # no query: no call
    ("how tall is it?", ["324 m.", "Very.", "A colour."]),
]


def test_each_call_keeps_its_candidates_first_and_pads_with_distinct_others() -> None:
    calls = rerank_calls(ROWS, docs_per_call=4, seed=0)
    assert [c.query for c in calls] == ["where is paris?", "what is red?", "how tall is it?"]
    pool = {"In France.", "Bananas are yellow.", "A colour.", "324 m.", "Very.", "never used"}
    for call, (_, candidates) in zip(calls, [ROWS[0], ROWS[1], ROWS[3]], strict=True):
        assert len(call.documents) == 4
        assert len(set(call.documents)) == 4  # no document twice in one call
        assert list(call.documents[: len(candidates)]) == candidates
        assert set(call.documents) <= pool


def test_the_same_seed_gives_the_same_calls() -> None:
    assert rerank_calls(ROWS, 5, seed=3) == rerank_calls(ROWS, 5, seed=3)


def test_a_call_longer_than_its_row_is_cut_to_the_first_candidates() -> None:
    (call,) = rerank_calls([("q", ["a", "b", "c"])], docs_per_call=2, seed=0)
    assert call.documents == ("a", "b")


def test_too_few_candidates_for_a_call_is_an_error() -> None:
    with pytest.raises(ValueError, match="6 distinct candidates; a call needs 7"):
        rerank_calls(ROWS, docs_per_call=7, seed=0)


def test_ratio_row_rates_percentiles_and_target() -> None:
    # Facet: 10 calls of 32 pairs in 2 s = 160 pairs/s; baseline: 5 calls in 2 s = 80 pairs/s -> 2.00x
    facet = LoadResult(calls=10, seconds=2.0, latencies_ms=[1.0, 2.0, 3.0, 4.0, 5.0])
    baseline = LoadResult(calls=5, seconds=2.0, latencies_ms=[10.0, 20.0])
    row = ratio_row("rerank, 8 callers", facet, baseline, 32, "Infinity", 1.0)
    # p50 of 1..5 is 3; p99 by linear interpolation is 1 + 0.99 * 4 = 4.96; of 10, 20: 15 and 19.9
    assert row.facet == "160.0 (p50 / p99 3.00 / 4.96 ms)"
    assert row.baseline == "Infinity 80.0 (p50 / p99 15.00 / 19.90 ms)"
    assert row.ratio == "2.00x"
    assert row.cells()[-1] == ">= 1.0x met"
    slower = ratio_row("rerank", baseline, facet, 32, "Infinity", 1.0)
    assert (slower.ratio, slower.met) == ("0.50x", False)


def test_a_side_with_failed_calls_never_meets_its_target() -> None:
    facet = LoadResult(calls=10, errors=1, seconds=1.0, latencies_ms=[1.0])
    row = ratio_row("embed", facet, LoadResult(calls=1, seconds=1.0, latencies_ms=[1.0]), 1, "Infinity", 1.0)
    assert row.ratio == "10.00x"
    assert row.met is False
    assert ", 1 failed)" in row.facet


def test_overhead_row_compares_medians() -> None:
    row = overhead_row("1 call", [3.0, 2.0, 2.5], [1.0, 1.5, 2.0], "in-process", 1.0)
    assert row.ratio == "+1.00 ms"  # medians 2.5 and 1.5
    assert row.met is True
    assert overhead_row("1 call", [3.0], [1.5], "in-process", 1.0).met is False


def test_infinity_serves_every_model_on_loopback_without_its_result_cache() -> None:
    models = [InfinityModel(Path("/m/minilm"), "minilm"), InfinityModel(Path("/m/ce"), "reranker")]
    argv = infinity_command(Path("/venv/bin/infinity_emb"), models, 4321, engine="optimum", batch_size=16)
    assert argv[:2] == ["/venv/bin/infinity_emb", "v2"]
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "4321"]
    # v2 pairs the i-th --model-id with the i-th of every repeated option
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--model-id"] == ["/m/minilm", "/m/ce"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--served-model-name"] == ["minilm", "reranker"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--engine"] == ["optimum", "optimum"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--batch-size"] == ["16", "16"]
    assert argv.count("--no-vector-disk-cache") == 2


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [({"engine": "tensorrt"}, "engine must be one of torch, optimum"), ({"batch_size": 0}, "batch_size must be >= 1")],
)
def test_infinity_command_refuses_bad_settings(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        infinity_command(Path("x"), [InfinityModel(Path("m"), "m")], 1, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one model"):
        infinity_command(Path("x"), [], 1)


def test_failed_http_calls_are_counted_not_raised() -> None:
    async def failing(position: int) -> None:
        await asyncio.sleep(0)
        raise HTTPCallError("POST /rerank: HTTP 503: overloaded")

    result = asyncio.run(callers_for_duration(failing, callers=2, seconds=0.05))
    assert result.calls == 0
    assert result.errors >= 2
    assert result.first_error == "UNKNOWN: POST /rerank: HTTP 503: overloaded"
