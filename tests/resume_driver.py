"""Trains a config into a run directory as `mtl-keras train` does (`fit_run`
with `run_dir`): a process for the resume tests to kill.

    python tests/resume_driver.py CONFIG RUN_DIR [--loop]
"""

import argparse
import sys

from mtl_keras.checkpoints import Preempted
from mtl_keras.config import load_config
from mtl_keras.pipeline import fit_run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("run_dir")
    parser.add_argument("--loop", action="store_true", help="train with loop.train_loop")
    args = parser.parse_args()
    try:
        fit_run(load_config(args.config), run_dir=args.run_dir, verbose=0,
                explicit_loop=args.loop, with_predictions=False)
    except Preempted as stopped:
        print(stopped, file=sys.stderr)
        return stopped.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
