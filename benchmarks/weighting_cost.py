"""The step cost of every weighting method relative to static weighting.

The small config: the bundled sample's three tasks (topic, sentiment,
rating) and its model (`configs/sample.yaml`), batches of the real
pipeline (`batching: every_task`, so every method sees every task). One
model per method, built and compiled the same way (default AdamW, the
config's precision), trains `--steps` steps per round on the same batches
with `model.train_on_batch`'s compiled step; rounds are interleaved (see
`harness.py`) and the ratios are paired by round. Reported: steps per second
and per process CPU-second, medians, and the ratio to `static`.

Usage:
    python benchmarks/weighting_cost.py [--rounds 5] [--steps 30] [--out FILE]
"""

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from mtl_keras import weighting  # noqa: E402
from mtl_keras.config import load_config  # noqa: E402
from mtl_keras.epochs import EpochBatches  # noqa: E402
from mtl_keras.pipeline import build_model, read_data, training_texts  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--methods", default=",".join(m for m in weighting.METHODS if m != "equal"))
    parser.add_argument("--out", default="benchmarks/results/weighting_cost.json")
    args = parser.parse_args()
    config = load_config(batching="every_task").resolved()
    data = read_data(config)
    preprocessor = config.build_preprocessor(training_texts(data.tables))
    batches = EpochBatches(data.rows, preprocessor, config.training.batch_size, keep_order=True)
    batches = list(batches.epoch(0).take(args.steps))

    def candidate(method):
        model = build_model(dataclasses.replace(config, weighting=method), preprocessor)

        def run():
            start, cpu = time.perf_counter(), time.process_time()
            for x, y, w in batches:
                model.train_on_batch(x, y, sample_weight=w)
            return len(batches), time.perf_counter() - start, time.process_time() - cpu

        uses = weighting.METHODS[method].uses
        return harness.Candidate(method, run, description=f"uses {uses}")

    model_name, flags = harness.cpu_description()
    print(f"CPU: {model_name}; flags: {', '.join(flags) or 'none of interest'}")
    result = harness.run_interleaved(
        [candidate(m) for m in args.methods.split(",")],
        rounds=args.rounds,
        baseline="static",
        unit="steps/s",
        title=f"Weighting methods, step cost, sample config (3 tasks), {config.precision}",
        config={"steps": args.steps, "cpu": model_name, "cpu_flags": flags,
                "precision": config.precision, "batch_size": config.training.batch_size},
    )
    markdown = result.to_markdown() + f"\n\nCPU: {model_name} ({', '.join(flags)})."
    print(markdown)
    harness.write_results(args.out, result.to_dict(), markdown)


if __name__ == "__main__":
    main()
