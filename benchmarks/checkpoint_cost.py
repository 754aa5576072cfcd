"""The cost of default checkpointing on the main job (`mtl-keras train`, the sample).

Two candidates in interleaved rounds (see `harness.py`), each one full
`fit_run` of the sample config (10 epochs, as `mtl-keras train` runs it):

- `no_checkpoints` (the baseline): `fit_run(config)` with no run directory.
- `default_checkpoints`: `fit_run(config, run_dir=...)` into a fresh
  directory, as the CLI does: a checkpoint at every epoch end and every 300 s
  (`training.checkpoint_every_seconds`), `history.csv`.

Throughput is training steps per second of `fit` (the `train_seconds` and
`train_cpu_seconds` of `RunResult.compute`, so vocabulary, export and
evaluation are left out). Also reported: the seconds spent inside
`TrainingCheckpoint.save` as a share of the training time, measured directly.
Both run with `training.deterministic: true` (the default).

Usage:
    python benchmarks/checkpoint_cost.py [--rounds 3] [--epochs 10] [--out FILE]
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from mtl_keras import checkpoints  # noqa: E402
from mtl_keras.config import load_config  # noqa: E402
from mtl_keras.pipeline import fit_run  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/checkpoint_cost.json")
    args = parser.parse_args()
    config = load_config(epochs=args.epochs)
    save_seconds = []
    save = checkpoints.TrainingCheckpoint.save

    def timed_save(self, epoch, batch):
        start = time.perf_counter()
        try:
            return save(self, epoch, batch)
        finally:
            save_seconds[-1] += time.perf_counter() - start

    checkpoints.TrainingCheckpoint.save = timed_save
    shares = []

    def run(with_checkpoints):
        save_seconds.append(0.0)
        run_dir = tempfile.mkdtemp() if with_checkpoints else None
        result = fit_run(config, run_dir=run_dir, verbose=0, with_predictions=False)
        compute = result.compute
        if with_checkpoints:
            shares.append(save_seconds[-1] / compute["train_seconds"])
        return compute["steps"], compute["train_seconds"], compute["train_cpu_seconds"]

    model, flags = harness.cpu_description()
    print(f"CPU: {model}; flags: {', '.join(flags) or 'none of interest'}")
    result = harness.run_interleaved(
        [
            harness.Candidate("no_checkpoints", lambda: run(False),
                              description="fit_run, no run directory"),
            harness.Candidate("default_checkpoints", lambda: run(True),
                              description="fit_run into a run directory (CLI defaults)"),
        ],
        rounds=args.rounds,
        baseline="no_checkpoints",
        unit="steps/s",
        title=f"Default checkpointing, sample config, {args.epochs} epochs",
        config={"epochs": args.epochs, "cpu": model, "cpu_flags": flags},
    )
    shares.sort()
    median_share = shares[len(shares) // 2] if shares else float("nan")
    markdown = result.to_markdown() + (
        f"\n\nCPU: {model} ({', '.join(flags)}). Time inside TrainingCheckpoint.save: "
        f"median {100 * median_share:.2f}% of the training time "
        f"(rounds: {', '.join(f'{100 * s:.2f}%' for s in shares)})."
    )
    print(markdown)
    harness.write_results(args.out, {**result.to_dict(), "save_share": shares}, markdown)


if __name__ == "__main__":
    main()
