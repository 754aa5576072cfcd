"""Training throughput against peers, on the real SST-2 + CoLA + AG News mix.

The same examples — a temperature-2 mixture (`mtl_keras.data.Mixture`) of
SST-2 sentences, CoLA sentences and AG News descriptions from
`/work/shared/data` — are trained on by, per precision (float32 and
mixed_bfloat16), in interleaved rounds (see `harness.py`):

- `ours_bucketed`: `MultiTaskModel.fit` on our length-bucketed batches
  (`mtl_keras.batching.make_batches`: each batch padded to 16, 32, 64 or
  128 tokens, whichever holds its longest text).
- `ours_fixed128`: the same model on batches padded to 128 tokens: our step
  without the bucketing.
- `keras_fixed128` (the baseline): how a Keras tutorial does it — a plain
  functional `keras.Model` with the same layers (a `SharedEncoder` and one
  Dense head per task; `harness.plain_keras_model`),
  `compile(loss={...}, loss_weights={...})` (no metrics) and `fit` on the
  batches padded to 128, with the label masks as per-output
  `sample_weight`s.
- `single_task_x3`: three separate single-task models of the same size
  (our model with one task each), trained one after another, each on its
  task's share of the same examples (bucketed batches).

Every candidate trains on the same examples each round (batches are
tokenized once and cached, so tokenization is not timed). Items are
training examples; ratios are paired speed-ups against `keras_fixed128` of
the same precision. Matmul FLOPs per example are counted on the real batch
shapes, so the MFU columns show how much of the ceiling each one uses for
the work it does (padding included).

The vocabulary is the 8,000 most frequent words of the examples (whole
words, as the WordPiece tokenizer splits them): learning a WordPiece
vocabulary takes minutes and changes token counts only slightly.

Usage:
    python benchmarks/peers.py [--rounds 5] [--examples 2048] [--hidden 128]
        [--layers 2] [--batch-size 64] [--out benchmarks/results/peers.json]
        [--smoke]

Without `/work/shared/data` (or `--data DIR`) it prints a message and exits
0; `--smoke` then uses generated texts.
"""

import argparse
import collections
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from mtl_keras import MultiTaskModel, SharedEncoder, Task  # noqa: E402
from mtl_keras.batching import make_batches  # noqa: E402
from mtl_keras.config import load_config  # noqa: E402
from mtl_keras.data import Examples, Mixture, Temperature  # noqa: E402
from mtl_keras.preprocess import RESERVED_TOKENS, TextPreprocessor  # noqa: E402

DATA = "/work/shared/data"
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PRECISIONS = ("float32", "mixed_bfloat16")
BASELINE = "keras_fixed128"
CANDIDATES = ("ours_bucketed", "ours_fixed128", BASELINE, "single_task_x3")
TASKS = (
    Task("sst2", "binary", label_names=("negative", "positive")),
    Task("cola", "binary", label_names=("unacceptable", "acceptable")),
    Task(
        "ag_news",
        "multiclass",
        num_classes=4,
        label_names=("World", "Sports", "Business", "Sci/Tech"),
    ),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--examples", type=int, default=2048, help="training examples per round"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--seq-len", type=int, default=128, help="the fixed padded length"
    )
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--data", default=DATA, help="the shared data folder")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        help="default: both (float32 only with --smoke)",
    )
    parser.add_argument("--out", default=os.path.join(RESULTS, "peers.json"))
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, 1 round; generated texts if the data is absent",
    )
    args = parser.parse_args(argv)
    args.warmup_rounds = 1
    if args.smoke:
        args.rounds, args.examples, args.batch_size, args.seq_len = 1, 48, 8, 32
        args.hidden, args.layers, args.heads, args.vocab = 16, 1, 2, 300
        args.warmup_rounds = 0  # the one round traces; its speed means nothing
        args.precisions = args.precisions or ["float32"]
    args.precisions = args.precisions or list(PRECISIONS)
    return args


# --- Data ----------------------------------------------------------------------


def has_data(directory):
    files = (
        "sst2/train.tsv",
        "cola/in_domain_train.tsv",
        "ag_news/train_sample_10k.tsv",
    )
    return all(os.path.isfile(os.path.join(directory, f)) for f in files)


def real_sources(directory):
    """The training sources of `configs/glue_agnews_files.yaml`, from `directory`."""
    return load_config("glue_agnews_files", data_root=directory).sources("train")


class _Generated:
    """A stand-in source of generated texts (for `--smoke` without data)."""

    WORDS = (
        "the a film story plot team match market shares rose fell game season "
        "company bank stocks goal coach election minister very not quite good "
        "bad dull moving funny slow it was is were and but of to in on with"
    ).split()

    def __init__(self, task, size, seed, length):
        self.name = self.location = task.name
        self.tasks = {task.name: task.name}
        self.task, self.size, self.seed, self.length = task, size, seed, length

    def read(self, tasks, empty_text="keep"):
        rng = np.random.default_rng(self.seed)
        lengths = rng.integers(self.length // 4, self.length, self.size)
        text = np.empty(self.size, object)
        text[:] = [" ".join(rng.choice(self.WORDS, n)) for n in lengths]
        labels, masks = {}, {}
        for task in tasks:  # class labels, as the task's kind stores them
            mine = task.name == self.task.name
            values = rng.integers(0, len(task.classes), self.size)
            values = task.task_kind.label_array(task, values if mine else 0 * values)
            labels[task.name] = values
            masks[task.name] = np.full(self.size, float(mine), "float32")
        return Examples(self.name, tuple(tasks), text, None, labels, masks)


def generated_sources(size=200):
    lengths = {"sst2": 20, "cola": 12, "ag_news": 60}
    return [
        _Generated(task, size, seed, lengths[task.name])
        for seed, task in enumerate(TASKS)
    ]


def pool_of_examples(sources, count, seed=0):
    """The first `count` examples of a temperature-2 mixture, as one table."""
    mixture = Mixture(TASKS, sources, sampler=Temperature(2.0), seed=seed)
    rows = list(mixture.epoch_dataset(0).take(count).as_numpy_iterator())
    text = np.empty(len(rows), object)
    text[:] = [f["text"].decode("utf-8") for f, _, _ in rows]
    labels = {t.name: np.stack([y[t.name] for _, y, _ in rows]) for t in TASKS}
    masks = {t.name: np.stack([m[t.name] for _, _, m in rows]) for t in TASKS}
    return Examples("pool", TASKS, text, None, labels, masks)


_WORD = re.compile(r"\w+|[^\w\s]")


def word_vocabulary(texts, size):
    """The `size` most frequent lowercased words and punctuation marks."""
    counts = collections.Counter(w for t in texts for w in _WORD.findall(t.lower()))
    words = [w for w, _ in counts.most_common(size - len(RESERVED_TOKENS))]
    return list(RESERVED_TOKENS) + words


def cached_batches(table, preprocessor, batch_size, fixed):
    """Tokenized, cached batches of a table, in a fixed order, with a known count."""
    batches = make_batches(
        table.to_dataset(), preprocessor, batch_size, pad_to_fixed_length=fixed
    ).cache()
    count = sum(1 for _ in batches)  # fills the cache
    return batches.apply(tf.data.experimental.assert_cardinality(count))


def batch_shapes(batches):
    return [tuple(x["token_ids"].shape) for x, _, _ in batches]


# --- Models --------------------------------------------------------------------


def make_encoder(args, preprocessor, precision):
    return SharedEncoder.for_preprocessor(
        preprocessor,
        hidden_dim=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        dropout=0.1,
        dtype=precision,
    )


def build_ours(args, preprocessor, precision, tasks=TASKS):
    encoder = make_encoder(args, preprocessor, precision)
    model = MultiTaskModel(list(tasks), encoder, preprocessor)
    model.compile(optimizer=harness.default_optimizer())
    return model


def build_plain(args, preprocessor, precision):
    """The same layers as a plain functional Keras model with one output per task."""
    return harness.plain_keras_model(
        make_encoder(args, preprocessor, precision), TASKS, harness.default_optimizer()
    )


# --- Runners -------------------------------------------------------------------


def fit_round(pairs, items):
    """One round: `fit` each (model, batches) once, one after the other."""

    def run():
        for model, batches in pairs:
            model.fit(batches, epochs=1, shuffle=False, verbose=0)
        return items

    return run


def flops_per_example(model, shapes):
    """Training matmul FLOPs per example, on the real batch shapes."""
    total = sum(b * harness.model_matmul_flops(model, length) for b, length in shapes)
    return total / sum(b for b, _ in shapes)


def build_candidates(args, pool, vocabulary, precision):
    preprocessor = TextPreprocessor(vocabulary, sequence_length=args.seq_len)
    bucketed = cached_batches(pool, preprocessor, args.batch_size, fixed=False)
    fixed = cached_batches(pool, preprocessor, args.batch_size, fixed=True)
    shapes = {"bucketed": batch_shapes(bucketed), "fixed": batch_shapes(fixed)}
    per_task = []
    for task in TASKS:
        rows = np.flatnonzero(pool.masks[task.name])
        table = pool.take(rows, only_task=task.name)
        table = Examples(
            table.source,
            (task,),
            table.text,
            None,
            {task.name: table.labels[task.name]},
            {task.name: table.masks[task.name]},
        )
        batches = cached_batches(table, preprocessor, args.batch_size, fixed=False)
        per_task.append((task, batches, batch_shapes(batches)))

    ours = build_ours(args, preprocessor, precision)
    ours_fixed = build_ours(args, preprocessor, precision)
    plain = build_plain(args, preprocessor, precision)
    singles = [
        (build_ours(args, preprocessor, precision, [t]), b) for t, b, _ in per_task
    ]
    single_shapes = [s for _, _, shapes_ in per_task for s in shapes_]
    single_flops = sum(
        sum(b * harness.model_matmul_flops(model, n) for b, n in shapes_)
        for (model, _), (_, _, shapes_) in zip(singles, per_task)
    ) / len(pool)
    matmul_dtype = "bfloat16" if precision == "mixed_bfloat16" else "float32"
    peak = peak_cpu = None
    if not args.smoke:  # measuring the ceiling takes a while
        peak = harness.matmul_ceiling(matmul_dtype)
        peak_cpu = harness.matmul_ceiling(matmul_dtype, clock="cpu")
    specs = [
        (
            "ours_bucketed",
            "MultiTaskModel.fit, length-bucketed batches (make_batches)",
            [(ours, bucketed)],
            flops_per_example(ours, shapes["bucketed"]),
            shapes["bucketed"],
        ),
        (
            "ours_fixed128",
            f"MultiTaskModel.fit, batches padded to {args.seq_len}",
            [(ours_fixed, fixed)],
            flops_per_example(ours_fixed, shapes["fixed"]),
            shapes["fixed"],
        ),
        (
            BASELINE,
            "plain keras.Model, compile(loss={…}, loss_weights={…}), padded to "
            f"{args.seq_len}",
            [(plain, fixed)],
            flops_per_example(plain, shapes["fixed"]),
            shapes["fixed"],
        ),
        (
            "single_task_x3",
            f"{len(TASKS)} single-task models one after another, bucketed",
            singles,
            single_flops,
            single_shapes,
        ),
    ]
    candidates = []
    for name, description, pairs, flops, batch_list in specs:
        params = sum(model.count_params() for model, _ in pairs)
        candidates.append(
            harness.Candidate(
                name=name,
                run=fit_round(pairs, len(pool)),
                description=description,
                flops_per_item=flops,
                peak_flops=peak,
                peak_flops_per_cpu_second=peak_cpu,
                info={
                    "precision": precision,
                    "parameters": params,
                    "batches": len(batch_list),
                    "padded_tokens_per_example": sum(b * n for b, n in batch_list)
                    / len(pool),
                },
            )
        )
    return candidates


# --- Main ----------------------------------------------------------------------


def load_pool(args):
    """`(pool, data name)`, or `(None, None)` when there is nothing to run on."""
    if has_data(args.data):
        sources, name = real_sources(args.data), "sst2 + cola + ag_news (shared data)"
    elif args.smoke:
        sources, name = generated_sources(), "generated texts"
    else:
        return None, None
    return pool_of_examples(sources, args.examples), name


def to_markdown(results, header):
    lines = [header, ""]
    for result in results.values():
        lines += [result.to_markdown(), ""]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    pool, data_name = load_pool(args)
    if pool is None:
        print(
            f"peers.py: no data at {args.data} (sst2/, cola/, ag_news/); skipped. "
            "Pass --data DIR, or --smoke for generated texts."
        )
        return None
    tf.get_logger().setLevel("ERROR")
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    vocabulary = word_vocabulary(pool.text.tolist(), args.vocab)
    counts = {t.name: int(pool.masks[t.name].sum()) for t in TASKS}
    print(
        f"{len(pool)} examples per round from {data_name}: {counts}; vocabulary "
        f"{len(vocabulary)}",
        flush=True,
    )
    results = {}
    for precision in args.precisions:
        candidates = build_candidates(args, pool, vocabulary, precision)
        info = candidates[0].info
        print(
            f"{precision}: bucketed {info['padded_tokens_per_example']:.1f} padded "
            f"tokens per example vs {args.seq_len} fixed",
            flush=True,
        )
        results[precision] = harness.run_interleaved(
            candidates,
            rounds=args.rounds,
            baseline=BASELINE,
            unit="ex/s",
            warmup_rounds=args.warmup_rounds,
            title=(
                f"Training throughput, {precision}: {len(pool)} examples per round "
                f"(SST-2 + CoLA + AG News mix), batch {args.batch_size}, hidden "
                f"{args.hidden}, {args.layers} layers"
            ),
            config={k: v for k, v in vars(args).items()},
            log=lambda *a: print(*a, flush=True),
        )
    wall = time.perf_counter() - start
    header = (
        f"# Training throughput against peers\n\n`python benchmarks/peers.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`: {data_name}, "
        f"{len(pool)} examples per round ({counts}), {wall:.0f} s in all."
    )
    markdown = to_markdown(results, header)
    print()
    print(markdown)
    if args.out:
        payload = {
            "data": data_name,
            "examples_per_round": len(pool),
            "task_examples": counts,
            "config": vars(args),
            "wall_seconds": round(wall, 1),
            "results": {p: r.to_dict() for p, r in results.items()},
        }
        harness.write_results(args.out, payload, markdown)
    return results


if __name__ == "__main__":
    main()
