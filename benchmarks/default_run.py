"""The README's main job, `mtl-keras train`, timed end to end and by phase.

Runs the installed `mtl-keras train` (the default config: the bundled
sample) `--runs` times, one after the other, each in a fresh process and a
new run directory, and reports the median wall time and the median CPU time
of the process (user + system, from `wait4`), with the phases read from
when each progress line appears:

- `start`: from the command to its first data line (Python, TensorFlow and
  Keras imports, the config check);
- `data`: reading, checking, learning the vocabulary, the data report
  (to its dev line);
- `setup`: the model, the dev batches and the run directory;
- `epoch_1`: the first epoch (mostly TensorFlow tracing the step);
- `epochs_2_on`: the other epochs;
- `after`: the final evaluation, `model.keras`, the SavedModel export,
  plots and records;
- `exit`: from the last line to the end of the process.

Usage: python benchmarks/default_run.py --runs 3 --out benchmarks/results/default_run.json
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import harness

PHASES = ("start", "data", "setup", "epoch_1", "epochs_2_on", "after", "exit")
# The line that ends each phase (its first occurrence), "" for the end of the process.
ENDS = ("Read train data", "Data report, dev", "Training:", "Epoch 1/", "LAST_EPOCH",
        "Run directory", "")


def mtl_keras_command():
    """The `mtl-keras` next to this Python, as the README's command runs it."""
    found = os.path.join(os.path.dirname(sys.executable), "mtl-keras")
    return [found] if os.path.exists(found) else [sys.executable, "-m", "mtl_keras.cli"]


def timed_run(out_dir, extra=()):
    """`(wall s, CPU s, {phase: s}, returncode, [(s, line)])` of one `mtl-keras train`."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [*mtl_keras_command(), "train", "--out", out_dir, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in process.stdout:
        seen.append((time.perf_counter() - start, line.rstrip("\n")))
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, phases(seen, wall), process.returncode, seen


def phases(seen, wall):
    """Seconds per phase from `(seconds since start, line)` pairs."""
    epochs = [t for t, line in seen if line.startswith("Epoch ")]
    marks = []
    for end in ENDS:
        if end == "LAST_EPOCH":
            marks.append(epochs[-1] if epochs else None)
        elif end == "":
            marks.append(wall)
        else:
            marks.append(next((t for t, line in seen if line.startswith(end)), None))
    found, previous = {}, 0.0
    for name, mark in zip(PHASES, marks):
        if mark is None:
            found[name] = None
            continue
        found[name] = round(mark - previous, 2)
        previous = mark
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", help="write JSON here (and .md beside it)")
    parser.add_argument("--smoke", action="store_true", help="one run of 1 epoch on 200 rows")
    args = parser.parse_args(argv)
    extra = ("--epochs", "1", "--set", "data.train.0.max_rows=200") if args.smoke else ()
    runs = 1 if args.smoke else args.runs
    env = harness.environment()
    print(harness.machine_line(env), flush=True)
    results = []
    scratch = tempfile.mkdtemp()
    try:
        for i in range(runs):
            out = os.path.join(scratch, f"run{i}")
            wall, cpu, split, code, seen = timed_run(out, extra)
            if code != 0:
                print("\n".join(line for _, line in seen[-20:]))
                raise SystemExit(f"mtl-keras train exited {code}")
            results.append({"wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                            "phases": split})
            print(f"run {i + 1}: {wall:.1f} s wall, {cpu:.1f} s CPU; "
                  + ", ".join(f"{k} {v}" for k, v in split.items()), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    median = {
        "wall_seconds": statistics.median(r["wall_seconds"] for r in results),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in results),
        "phases": {p: statistics.median(r["phases"][p] for r in results)
                   if all(r["phases"][p] is not None for r in results) else None
                   for p in PHASES},
    }
    command = "mtl-keras train" + ("" if not extra else " " + " ".join(extra))
    table = ["| phase | median s |", "|---|---|"] + [
        f"| {p} | {median['phases'][p]} |" for p in PHASES]
    markdown = "\n".join([
        f"# `{command}`, {runs} runs", "", harness.machine_line(env), "",
        f"Median wall {median['wall_seconds']:.1f} s, median process CPU "
        f"{median['cpu_seconds']:.1f} s (runs: "
        + ", ".join(f"{r['wall_seconds']:.1f}" for r in results) + " s wall).", "",
        *table])
    print(markdown)
    if args.out:
        harness.write_results(args.out, {"command": command, "environment": env,
                                         "runs": results, "median": median}, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
