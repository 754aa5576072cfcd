"""Smoke test of benchmarks/input_pipeline.py (generated texts; no timing checks)."""

import json
import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import input_pipeline  # noqa: E402

pytestmark = pytest.mark.slow  # a benchmark's smoke run (CI runs them: .ci/run)


def test_smoke_writes_both_ratios(tmp_path):
    out = str(tmp_path / "input_pipeline.json")
    input_pipeline.main(["--smoke", "--out", out])
    with open(out) as f:
        result = json.load(f)
    summary = result["summary"]
    assert summary["pipeline_vs_training"]["ratio"] > 0
    assert summary["pipeline_build_seconds"] > 0
    assert summary["bucketed_vs_fixed128"]["ratio"] > 0
    accuracy = summary["dev_accuracy_after_1_epoch"]
    assert set(accuracy) == {"train_bucketed", "train_fixed128"}
    assert 0 <= accuracy["train_bucketed"]["mean"] <= 1
    assert set(result["candidates"]) == {
        "pipeline",
        "train_bucketed",
        "train_fixed128",
    }
    assert os.path.isfile(str(tmp_path / "input_pipeline.md"))
