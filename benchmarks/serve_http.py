"""`mtl-keras serve` latency: HTTP on loopback against calling the SavedModel in-process.

Exports the model of `serving.py` (hidden 64, 2 layers, vocabulary from
SST-2 sentences or generated ones), starts `mtl-keras serve` on it in its own
process (`--port 0`), and times, in interleaved rounds, batch-1 requests of
the same texts:

- `in_process_1` / `in_process_16`: `Predictor.predict_arrays` (the
  SavedModel's `serving_default`) from 1 / 16 threads of this process;
- `http_1` / `http_16`: `POST /v1/models/bench:predict` from 1 / 16 client
  threads, each on its own keep-alive connection.

Reports per mode the median over rounds of p50 and p99 latency, requests
per second, and the CPU seconds per request (this process's, plus the
server process's for HTTP), with the HTTP / in-process ratios.

Usage: python benchmarks/serve_http.py --rounds 3 --out serve_http.json [--smoke]
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import harness  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import serving  # noqa: E402  (the same model and texts as the signature benchmark)

from mtl_keras.export import export_saved_model, load_for_serving  # noqa: E402
from mtl_keras.preprocess import TextPreprocessor  # noqa: E402

MODES = ("in_process_1", "http_1", "in_process_16", "http_16")


def server_cpu_seconds(pid):
    """User + system CPU seconds of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "mtl_keras.cli", "serve", path, "--port", "0", "--name",
         "bench", "--quiet", "--workers", "16", "--max-batch", "64"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = process.stdout.readline()
    if " on http://" not in line:
        process.kill()
        raise RuntimeError(f"mtl-keras serve did not start: {line!r}")
    address = line.split(" on http://", 1)[1].split("/", 1)[0]
    host, port = address.rsplit(":", 1)
    return process, host, int(port)


def http_client(host, port):
    connection = http.client.HTTPConnection(host, port, timeout=60)

    def call(text):
        body = json.dumps({"instances": [text]})
        connection.request("POST", "/v1/models/bench:predict", body,
                           {"Content-Type": "application/json"})
        answer = connection.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}: {data[:200]!r}")
        return data

    return call


def run_clients(make_call, texts, clients):
    """Latencies (s) of every request, `clients` threads sharing `texts`."""
    latencies, lock = [], threading.Lock()
    shares = [texts[i::clients] for i in range(clients)]

    def client(share):
        call, mine = make_call(), []
        for text in share:
            start = time.perf_counter()
            call(text)
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=480, help="batch-1 requests per mode and round")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--data", default=serving.SST2, help="a GLUE-style sst2 folder")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round")
    args = parser.parse_args(argv)
    sizes = argparse.Namespace(hidden=64, layers=2, vocabulary_size=4000, train=5000)
    if args.smoke:
        args.rounds, args.requests = 1, 32
        sizes = argparse.Namespace(hidden=16, layers=1, vocabulary_size=500, train=200)
    keras.utils.set_random_seed(0)
    train_texts, texts, source = serving.load_texts(args.data, sizes.train, args.requests)
    preprocessor = TextPreprocessor.from_texts(train_texts, sizes.vocabulary_size,
                                               sequence_length=64)
    model = serving.build(preprocessor, sizes)
    env = harness.environment()
    print(harness.machine_line(env))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "saved_model")
        export_saved_model(model, path)
        predictor = load_for_serving(path)
        process, host, port = start_server(path)
        try:
            def in_process():
                return lambda text: predictor.predict_arrays([text])

            def over_http():
                return http_client(host, port)

            runs = {"in_process_1": (in_process, 1), "http_1": (over_http, 1),
                    "in_process_16": (in_process, 16), "http_16": (over_http, 16)}
            for make_call, clients in runs.values():  # warm-up: first calls, connections
                run_clients(make_call, texts[:32], clients)
            rounds = {mode: [] for mode in MODES}
            for number in range(args.rounds):
                for mode in MODES:
                    make_call, clients = runs[mode]
                    wall, cpu = time.perf_counter(), time.process_time()
                    server = server_cpu_seconds(process.pid)
                    latencies = run_clients(make_call, texts, clients)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    if mode.startswith("http"):
                        cpu += server_cpu_seconds(process.pid) - server
                    rounds[mode].append({
                        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
                        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
                        "requests_per_second": len(latencies) / wall,
                        "cpu_ms_per_request": 1000 * cpu / len(latencies),
                    })
                print(f"  round {number + 1}/{args.rounds} done", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)
    summary = {mode: {key: statistics.median(r[key] for r in rounds[mode]) for key in rounds[mode][0]}
               for mode in MODES}
    for clients in ("1", "16"):
        base, served = summary[f"in_process_{clients}"], summary[f"http_{clients}"]
        served["p50_ratio"] = served["p50_ms"] / base["p50_ms"]
        served["cpu_ratio"] = served["cpu_ms_per_request"] / base["cpu_ms_per_request"]
    report = {"environment": env, "texts": source, "requests_per_round": args.requests,
              "rounds": args.rounds, "model": vars(sizes), "summary": summary, "per_round": rounds}
    text = markdown(report)
    print(text)
    if args.out:
        harness.write_results(args.out, report, text)
    return report


def markdown(report):
    lines = [
        f"{harness.machine_line(report['environment'])}; {report['rounds']} rounds of "
        f"{report['requests_per_round']} batch-1 requests ({report['texts']} texts), medians",
        "",
        "| mode | p50 ms | p99 ms | requests/s | CPU ms/request | p50 vs in-process | CPU vs in-process |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, row in report["summary"].items():
        ratios = (f"{row['p50_ratio']:.2f}x | {row['cpu_ratio']:.2f}x" if "p50_ratio" in row
                  else "1.00x | 1.00x")
        lines.append(f"| {mode} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                     f"{row['requests_per_second']:.0f} | {row['cpu_ms_per_request']:.2f} | {ratios} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
