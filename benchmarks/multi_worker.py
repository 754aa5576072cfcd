"""Two local workers (MultiWorkerMirroredStrategy on loopback) vs one process, same work.

Each round trains the same config twice, in an order that alternates by
round: once as one process, once as two worker processes started with
`TF_CONFIG` (each replica takes half of every global batch of
`training.batch_size`, so both do the same optimizer steps on the same
examples). Reported per candidate, as medians over the rounds: examples per
second of `fit` (from `RunResult.compute`: `examples / train_seconds`, the
chief's clock for the pair) and the process CPU time of `fit` summed over
the processes, with ratios to the single process.

Caveat: on one machine the two workers share its cores (and each tokenizes
the whole stream: tf.data's data sharding keeps its part of every batch), so
this measures the cost of the collective all-reduces and the duplicated
input work, not a speed-up; across machines each worker brings its own cores.

Usage:
    python benchmarks/multi_worker.py [--rounds 3] [--epochs 2] [--config sample] [--out FILE]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _worker(args):
    """One process of a candidate: trains and prints `RunResult.compute` as JSON."""
    from mtl_keras.distribute import make_strategy

    strategy = make_strategy(args.strategy, 120)
    from mtl_keras.config import load_config
    from mtl_keras.pipeline import fit_run

    config = load_config(args.config, epochs=args.epochs)
    result = fit_run(config, strategy=strategy, verbose=0, with_predictions=False)
    print("COMPUTE " + json.dumps(result.compute), flush=True)


def _ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _launch(args, workers):
    """Runs `workers` processes (1: no strategy); returns their `compute` dicts."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--config", args.config,
               "--epochs", str(args.epochs)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    ports = _ports(workers)
    processes = []
    for index in range(workers):
        extra = {}
        if workers > 1:
            cluster = {"worker": [f"localhost:{p}" for p in ports]}
            extra["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                             "task": {"type": "worker", "index": index}})
        strategy = "multi_worker" if workers > 1 else "none"
        processes.append(subprocess.Popen(command + ["--strategy", strategy],
                                          env=dict(env, **extra), stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True))
    computes = []
    for process in processes:
        out, _ = process.communicate(timeout=1800)
        if process.returncode:
            raise SystemExit(f"a worker failed (exit {process.returncode})")
        line = next(x for x in out.splitlines() if x.startswith("COMPUTE "))
        computes.append(json.loads(line[len("COMPUTE "):]))
    return computes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--config", default="sample")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "multi_worker.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="none", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)
    sys.path.insert(0, HERE)
    import harness

    print(harness.machine_line(harness.environment()))
    results = {"one_process": [], "two_workers": []}
    for round_ in range(args.rounds):
        order = [("one_process", 1), ("two_workers", 2)]
        for name, workers in order if round_ % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            computes = _launch(args, workers)
            chief = computes[0]
            results[name].append({
                "examples_per_second": chief["examples"] / chief["train_seconds"],
                "train_cpu_seconds": sum(c["train_cpu_seconds"] for c in computes),
                "steps": chief["steps"],
                "wall_seconds": time.perf_counter() - started,
            })
            print(f"round {round_ + 1} {name}: {results[name][-1]}", flush=True)
    summary = {}
    for name, rows in results.items():
        summary[name] = {key: statistics.median(r[key] for r in rows)
                         for key in ("examples_per_second", "train_cpu_seconds", "wall_seconds")}
    base = summary["one_process"]
    for values in summary.values():
        values["throughput_ratio"] = values["examples_per_second"] / base["examples_per_second"]
        values["cpu_ratio"] = values["train_cpu_seconds"] / base["train_cpu_seconds"]
    lines = ["| candidate | examples/s (median) | ratio | fit CPU s (all processes) | CPU ratio |",
             "|---|---|---|---|---|"]
    for name, v in summary.items():
        lines.append(f"| {name} | {v['examples_per_second']:.0f} | {v['throughput_ratio']:.2f} | "
                     f"{v['train_cpu_seconds']:.1f} | {v['cpu_ratio']:.2f} |")
    print("\n".join(lines))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    payload = {"config": args.config, "epochs": args.epochs, "rounds": args.rounds,
               "cpu": harness.cpu_description(), "environment": harness.environment(),
               "results": results, "summary": summary}
    with open(args.out, "w") as f:
        json.dump(payload, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
