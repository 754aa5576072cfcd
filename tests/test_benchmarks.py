"""Smoke tests of the benchmark harness and the train-step benchmark (no timing checks)."""

import json
import os
import sys

import keras
import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import harness  # noqa: E402
import train_step  # noqa: E402


def _check_result_json(path, names, baseline):
    with open(path) as f:
        result = json.load(f)
    assert result["baseline"] == baseline
    assert list(result["candidates"]) == names
    for name, candidate in result["candidates"].items():
        assert candidate["median"] > 0, name
        assert candidate["cpu_median"] > 0, name
        assert candidate["ratio"] > 0 and candidate["cpu_ratio"] > 0, name
        assert len(candidate["values"]) == result["rounds"], name
    assert result["candidates"][baseline]["ratio"] == pytest.approx(1.0)
    return result


def test_harness_interleaves_rounds_and_reports_paired_ratios(tmp_path):
    calls = []

    def make_run(name, items):
        def run():
            calls.append(name)
            return items

        return run

    candidates = [
        harness.Candidate("base", make_run("base", 10), description="the baseline"),
        harness.Candidate(
            "timed", lambda: (20, 0.5, 0.25), flops_per_item=1e6, peak_flops=1e9
        ),
        harness.Candidate("other", make_run("other", 5), warmup=lambda: None),
    ]
    result = harness.run_interleaved(
        candidates, rounds=3, baseline="base", title="unit", log=None
    )
    # One warm-up call for "base" (its run); then the order rotates each round.
    assert calls == ["base", "base", "other", "other", "base", "other", "base"]
    timed = result.candidates["timed"]
    assert timed.values == [40.0] * 3 and timed.cpu_values == [80.0] * 3
    assert timed.mfu(harness.THROUGHPUT) == pytest.approx(40e6 / 1e9)
    table = result.to_markdown()
    assert "`timed`" in table and "MFU" in table and "the baseline" in table
    result.save(tmp_path / "out.json")
    _check_result_json(tmp_path / "out.json", ["base", "timed", "other"], "base")

    latency = harness.run_interleaved(
        candidates[:2], rounds=2, mode=harness.LATENCY, title="latency", log=None
    )
    assert latency.unit == "ms/item"
    assert latency.candidates["timed"].values == [25.0, 25.0]


def test_harness_rejects_bad_arguments():
    run = harness.Candidate("a", lambda: 1)
    with pytest.raises(ValueError, match="distinct"):
        harness.run_interleaved([run, run], rounds=1, log=None)
    with pytest.raises(ValueError, match="Baseline"):
        harness.run_interleaved([run], rounds=1, baseline="b", log=None)
    with pytest.raises(ValueError, match="items"):
        harness.run_interleaved([harness.Candidate("z", lambda: 0)], log=None)


def test_flop_count_matches_the_formula():
    args = train_step.parse_args(["--smoke"])
    model = train_step.build_ours(args)
    L, H, inner = args.seq_len, args.hidden, 4 * args.hidden
    encoder = 2 * (4 * L * H * H) + 2 * (2 * L * L * H) + 2 * (2 * L * H * inner)
    heads = 2 * H * (4 + 1 + 1)
    expected = args.layers * encoder + heads
    assert harness.model_matmul_flops(model, L, training=False) == expected
    assert harness.model_matmul_flops(model, L) == 3 * expected
    plain = train_step.build_plain(args)
    assert harness.model_matmul_flops(plain, L) == 3 * expected


def test_matmul_ceiling_is_positive():
    assert harness.matmul_ceiling("float32", size=128, chain=2, repeats=2) > 0
    assert harness.matmul_ceiling("bfloat16", size=128, chain=2, repeats=2) > 0


def test_train_step_smoke_writes_every_candidate(tmp_path):
    out = tmp_path / "train_step.json"
    try:
        train_step.main(["--smoke", "--out", str(out)])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    result = _check_result_json(
        out,
        [
            "ours_fit_fp32",
            "ours_loop_fp32",
            "keras_fit_fp32",
            "ours_fit_best",
            "keras_fit_bf16",
        ],
        "keras_fit_fp32",
    )
    for candidate in result["candidates"].values():
        assert candidate["mfu"] > 0 and candidate["flops_per_item"] > 0
        traces = candidate["info"]["train_function_traces"]  # None for the loop
        assert traces is None or set(traces.values()) == {1}  # never re-traced
    assert set(result["config"]["targets_met"]) >= {
        "ours_fit_fp32 >= 1.0x",
        "ours_fit_best >= 1.5x",
    }
