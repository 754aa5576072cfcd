"""Trains a config with `fit_run` as one worker of a cluster (or alone), recording
what it trains on: a process for tests/test_multi_worker.py to start.

    python tests/multi_worker_driver.py CONFIG OUT [--strategy multi_worker|none]
                                        [--run-dir DIR] [--timeout S]

Writes `OUT/weights.npz` (the trained weights), `OUT/history.json` and
`OUT/seen.json`: per Keras epoch, the token-id rows this worker's replica
trained on, recorded inside the training step as `fit` consumes them.
"""

import argparse
import json
import sys
from pathlib import Path

import tensorflow as tf

from mtl_keras.distribute import make_strategy


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("out")
    parser.add_argument("--strategy", default="none")
    parser.add_argument("--run-dir")
    parser.add_argument("--timeout", type=float)
    args = parser.parse_args()
    strategy = make_strategy(args.strategy, args.timeout)  # before any other TF call

    import keras
    import numpy as np

    from mtl_keras.config import load_config
    from mtl_keras.model import MultiTaskModel
    from mtl_keras.pipeline import fit_run

    seen = []
    train_step = MultiTaskModel.train_step

    def recording_step(self, data):
        def record(token_ids):
            seen[-1].extend([[t for t in row if t] for row in token_ids.numpy().tolist()])
            return 0

        tf.py_function(record, [data[0]["token_ids"]], tf.int32)
        return train_step(self, data)

    class EpochMarker(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append([])

    MultiTaskModel.train_step = recording_step
    try:
        result = fit_run(load_config(args.config), strategy=strategy, run_dir=args.run_dir,
                         callbacks=[EpochMarker()], verbose=0, with_predictions=False)
    except tf.errors.OpError as error:
        print(f"collective failure: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = {v.path.replace("/", "|"): v.numpy() for v in result.model.weights}
    np.savez(out / "weights.npz", **weights)
    history = {k: [float(v) for v in values] for k, values in result.history.items()}
    (out / "history.json").write_text(json.dumps(history))
    (out / "seen.json").write_text(json.dumps(seen))
    (out / "metrics.json").write_text(json.dumps(result.metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
