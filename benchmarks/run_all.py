"""Runs the benchmarks with one command and writes `benchmarks/results/`.

Each benchmark runs in its own process, one after the other (they time
themselves; running them side by side would only measure the contention):

- `default_run.py`: the README's `mtl-keras train`, wall and CPU time by phase;
- `train_step.py`: our step against a plain Keras multi-output model
  (synthetic fixed-shape batches);
- `serving.py`: strings-in against ids-in SavedModel latency;
- `serve_http.py`: `mtl-keras serve` over loopback against the SavedModel in-process;
- `peers.py`: training throughput on the real SST-2 + CoLA + AG News mix
  against a tutorial-style Keras model padded to 128 and three single-task
  models (skipped without `/work/shared/data`);
- `minilm.py` (only with `--minilm`; long): pretrained MiniLM fine-tuning.

For each NAME it writes `results/NAME.json` (the script's own JSON),
`results/NAME.md` (the command, the time taken and the script's tables)
and `results/NAME.log` (everything it printed); `results/run_all.json`
lists what ran, how long it took and its exit status.

Usage:
    python benchmarks/run_all.py [--minilm] [--only NAME ...] [--smoke]
        [--out-dir benchmarks/results]

`--smoke` passes tiny sizes to every benchmark (a check that they run; the
numbers mean nothing) and writes to `results/smoke/` unless `--out-dir` is
given.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
BENCHMARKS = ("default_run", "train_step", "serving", "serve_http", "peers", "minilm")
# Extra arguments: a full run, and a smoke run.
ARGUMENTS = {
    "default_run": (["--runs", "3"], ["--smoke"]),
    "train_step": ([], ["--smoke"]),
    "serving": (["--rounds", "5"], ["--smoke"]),
    "serve_http": (["--rounds", "3"], ["--smoke"]),
    "peers": ([], ["--smoke"]),
    "minilm": ([], ["--smoke"]),
}
# Progress lines that do not belong in the markdown summary.
_PROGRESS = re.compile(r"^\s+(warm-up|round \d)|^(WARNING|I0000|E0000|W0000)|Warning")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minilm", action="store_true", help="also run minilm.py")
    parser.add_argument(
        "--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument("--out-dir", help="default: benchmarks/results")
    args = parser.parse_args(argv)
    if args.out_dir is None:
        args.out_dir = os.path.join(RESULTS, "smoke") if args.smoke else RESULTS
    return args


def selected(args):
    if args.only:
        return list(args.only)
    return [n for n in BENCHMARKS if n != "minilm" or args.minilm]


def summary_lines(output):
    """The printed tables and conclusions, without progress lines."""
    return [line for line in output.splitlines() if not _PROGRESS.search(line)]


def run_one(name, args):
    full, smoke = ARGUMENTS[name]
    json_path = os.path.join(args.out_dir, f"{name}.json")
    command = [
        sys.executable,
        os.path.join(HERE, f"{name}.py"),
        *(smoke if args.smoke else full),
        "--out",
        json_path,
    ]
    shown = " ".join(
        ["python", f"benchmarks/{name}.py", *command[2:-2], "--out", f"{name}.json"]
    )
    print(f"== {shown}", flush=True)
    start = time.perf_counter()
    process = subprocess.run(
        command, capture_output=True, text=True, cwd=os.path.dirname(HERE)
    )
    seconds = time.perf_counter() - start
    output = process.stdout + ("\n" + process.stderr if process.returncode != 0 else "")
    with open(os.path.join(args.out_dir, f"{name}.log"), "w") as f:
        f.write(process.stdout + "\n--- stderr ---\n" + process.stderr)
    status = "ok" if process.returncode == 0 else f"FAILED ({process.returncode})"
    lines = [
        f"# {name}",
        "",
        f"`{shown}` — {status}, {seconds:.0f} s, "
        f"{datetime.datetime.now().isoformat(timespec='minutes')}.",
        "",
        *summary_lines(output),
    ]
    with open(os.path.join(args.out_dir, f"{name}.md"), "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    print(f"   {status} in {seconds:.0f} s", flush=True)
    if process.returncode != 0:
        print(process.stderr[-2000:], file=sys.stderr)
    return {
        "command": shown,
        "returncode": process.returncode,
        "seconds": round(seconds, 1),
        "json": os.path.relpath(json_path, os.path.dirname(HERE))
        if os.path.isfile(json_path)
        else None,
    }


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    runs = {name: run_one(name, args) for name in selected(args)}
    with open(os.path.join(args.out_dir, "run_all.json"), "w") as f:
        json.dump({"smoke": args.smoke, "runs": runs}, f, indent=2)
    failed = [name for name, run in runs.items() if run["returncode"] != 0]
    print(f"wrote {args.out_dir}" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
