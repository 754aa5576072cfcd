import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtl_keras import MultiTaskModel, SharedEncoder, Task  # noqa: E402
from mtl_keras import export as mtl_export  # noqa: E402
from mtl_keras.preprocess import TextPreprocessor, learn_vocabulary  # noqa: E402

LENGTH = 16
WORDS = "the quick brown fox jumps over a lazy dog while cats sleep".split()
TASKS = [
    Task("topic", "multiclass", num_classes=3, label_names=["world", "sport", "tech"]),
    Task("positive", "binary", label_names=["no", "yes"]),
    Task("tags", "multilabel", num_classes=3, label_names=["red", "green", "blue"]),
    Task("score", "regression"),
    Task("pos", "tagging", num_classes=3, label_names=["N", "V", "X"]),
]
# Known words, an unknown word, empty and blank texts, invalid UTF-8 and a
# text longer than LENGTH (truncated).
TEXTS = [
    b"the quick brown fox",
    b"a lazy dog",
    b"zebra",
    b"",
    b"   ",
    b"the d\xffog \xe2\x82",
    b"the quick brown fox jumps over a lazy dog while cats sleep " * 4,
]


def sentences(count=50, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=n)) for n in rng.integers(1, 20, count)]


def make_model(vocabulary_size, tasks=TASKS):
    encoder = SharedEncoder(
        vocabulary_size=vocabulary_size,
        sequence_length=LENGTH,
        hidden_dim=8,
        num_layers=1,
        num_heads=2,
        dropout=0.0,
    )
    return MultiTaskModel(tasks, encoder)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One model, exported once as a SavedModel and as a .keras bundle."""
    keras.utils.set_random_seed(0)
    vocab = learn_vocabulary(sentences(), vocabulary_size=100)
    preprocessor = TextPreprocessor(vocab, sequence_length=LENGTH)
    model = make_model(len(vocab))
    root = tmp_path_factory.mktemp("export")
    saved_model = str(root / "saved_model")
    metadata = mtl_export.export_saved_model(model, preprocessor, saved_model)
    bundle = str(root / "model.keras")
    mtl_export.save_model_bundle(model, preprocessor, bundle)
    return {
        "model": model,
        "preprocessor": preprocessor,
        "saved_model": saved_model,
        "bundle": bundle,
        "metadata": metadata,
        "root": root,
    }


@pytest.fixture(scope="module")
def predictor(exported):
    return mtl_export.load_for_serving(exported["saved_model"])


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def expected_outputs(model, x):
    """The signature outputs computed from `model.predict` on packed ids."""
    logits = model.predict(x, verbose=0)
    mask = np.asarray(x["padding_mask"])
    out = {"num_tokens": mask.sum(1)}
    for task in model.tasks:
        z, names = logits[task.name], np.array(task.classes, dtype=object)
        if task.kind == "regression":
            out[f"{task.name}_value"] = z[:, 0]
            continue
        if task.kind == "binary":
            p = _sigmoid(z[:, 0])
            label = names[(p > 0.5).astype(int)]
        elif task.kind == "multilabel":
            p = _sigmoid(z)
            label = np.array([",".join(names[row > 0.5]) for row in p], dtype=object)
        else:
            p = _softmax(z)
            label = names[p.argmax(-1)]
            if task.kind == "tagging":
                label = np.where(mask, label, "")
        out[f"{task.name}_probabilities"] = p
        out[f"{task.name}_label"] = label
    return out


def assert_outputs_match(actual, expected, atol=1e-5):
    assert sorted(actual) == sorted(expected)
    length = actual["num_tokens"].max()
    for key, want in expected.items():
        got = actual[key]
        if want.ndim >= 2 and key.startswith("pos_"):
            want = want[:, :length]  # the strings-in signature cuts padding
        if want.dtype == object:
            got = np.vectorize(lambda b: b.decode())(got) if got.size else got
            np.testing.assert_array_equal(got, want.astype(str), err_msg=key)
        else:
            np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=key)


def test_signatures_and_metadata(exported):
    loaded = mtl_export.load_saved_model(exported["saved_model"])
    assert set(mtl_export.SIGNATURES) <= set(loaded.signatures)
    serving = loaded.signatures["serving_default"]
    assert list(serving.structured_input_signature[1]) == ["text"]
    ids_in = loaded.signatures["serve_token_ids"]
    assert sorted(ids_in.structured_input_signature[1]) == ["padding_mask", "token_ids"]
    expected_names = {"num_tokens"}
    for task in TASKS:
        expected_names.update(mtl_export.output_names(task))
    assert set(serving.structured_outputs) == expected_names
    assert set(ids_in.structured_outputs) == expected_names
    specs = serving.structured_outputs
    assert specs["topic_label"].dtype == tf.string
    assert specs["positive_probabilities"].shape.rank == 1
    assert specs["tags_label"].shape.rank == 1
    assert specs["pos_label"].shape.rank == 2
    assert specs["score_value"].dtype == tf.float32

    metadata = json.loads(loaded.signatures["metadata"]()["metadata"].numpy())
    assert metadata == exported["metadata"]
    assert mtl_export.read_metadata(exported["saved_model"]) == metadata
    assert metadata["inputs"] == ["text"] and metadata["sequence_length"] == LENGTH
    kinds = {t["name"]: (t["kind"], t["classes"]) for t in metadata["tasks"]}
    assert kinds["topic"] == ("multiclass", ["world", "sport", "tech"])
    assert kinds["positive"] == ("binary", ["no", "yes"])
    assert kinds["score"] == ("regression", [])


FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # registers the tokenizer ops

    path, texts_file, out_file = sys.argv[1:]
    texts = [bytes.fromhex(t) for t in json.load(open(texts_file))]
    loaded = tf.saved_model.load(path)
    text_out = loaded.signatures["serving_default"](text=tf.constant(texts))
    x = np.load(out_file + ".ids.npz")
    ids_out = loaded.signatures["serve_token_ids"](
        token_ids=tf.constant(x["token_ids"]), padding_mask=tf.constant(x["padding_mask"]))
    metadata = loaded.signatures["metadata"]()["metadata"].numpy().decode()
    for forbidden in ("mtl_keras", "keras_hub"):
        assert forbidden not in sys.modules, forbidden
    arrays = {"text/" + k: v.numpy() for k, v in text_out.items()}
    arrays.update({"ids/" + k: v.numpy() for k, v in ids_out.items()})
    np.savez(out_file, metadata=np.array(metadata), **arrays)
    """
)


def test_loads_in_plain_tensorflow_and_matches_keras(exported, tmp_path):
    model, preprocessor = exported["model"], exported["preprocessor"]
    x = {k: v.numpy() for k, v in preprocessor(tf.constant(TEXTS)).items()}
    expected = expected_outputs(model, x)
    (tmp_path / "texts.json").write_text(json.dumps([t.hex() for t in TEXTS]))
    out_file = str(tmp_path / "out.npz")
    np.savez(out_file + ".ids.npz", **x)
    script = tmp_path / "serve.py"
    script.write_text(FRESH_PROCESS)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            exported["saved_model"],
            str(tmp_path / "texts.json"),
            out_file,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out_file, allow_pickle=True) as saved:
        arrays = dict(saved)
    assert json.loads(str(arrays.pop("metadata"))) == exported["metadata"]
    for prefix in ("text/", "ids/"):
        actual = {
            k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)
        }
        assert_outputs_match(actual, expected)
    # The long text is truncated to LENGTH tokens; the empty one is [CLS] [SEP].
    assert arrays["text/num_tokens"].tolist()[-1] == LENGTH
    assert arrays["text/num_tokens"].tolist()[3:5] == [2, 2]


SAVED_MODEL_CLI = (
    "import sys, tensorflow_text; "
    "from tensorflow.python.tools.saved_model_cli import main; "
    "sys.argv[0] = 'saved_model_cli'; sys.exit(main())"
)


@pytest.mark.skipif(
    shutil.which("saved_model_cli") is None, reason="no saved_model_cli"
)
def test_saved_model_cli(exported):
    path = exported["saved_model"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    run_args = [
        "run",
        "--dir",
        path,
        "--tag_set",
        "serve",
        "--signature_def",
        "serving_default",
        "--input_exprs",
        'text=["a b", "c"]',
    ]
    # `show` only reads the graph's signatures: the stock command works.
    shown = subprocess.run(
        ["saved_model_cli", "show", "--dir", path, "--all"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "signature_def['serving_default']" in shown.stdout
    assert "signature_def['serve_token_ids']" in shown.stdout
    # `run` imports the graph, which needs the tensorflow-text ops; the stock
    # command has no flag to load them, so it runs with them pre-imported.
    ran = subprocess.run(
        [sys.executable, "-c", SAVED_MODEL_CLI, *run_args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    for name in ("topic_label", "positive_probabilities", "score_value", "pos_label"):
        assert f"Result for output key {name}:" in ran.stdout
    stock = subprocess.run(
        ["saved_model_cli", *run_args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if stock.returncode != 0:  # documents why the wrapper above is needed
        assert "Op type not registered" in stock.stderr


def test_predictor_outputs_are_json_and_agree_across_formats(exported, predictor):
    texts = [t.decode("utf-8", "surrogateescape") for t in TEXTS]
    from_saved_model = predictor.predict(texts, batch_size=3)
    from_keras = mtl_export.predict_texts(exported["bundle"], texts)
    json.dumps(from_saved_model)
    json.dumps(from_keras)
    assert len(from_saved_model) == len(texts)
    for a, b, num_tokens in zip(
        from_saved_model, from_keras, predictor.predict_arrays(texts)["num_tokens"]
    ):
        assert sorted(a) == sorted(t.name for t in TASKS)
        assert a["score"].keys() == {"value"}
        assert a["topic"]["label"] in ("world", "sport", "tech")
        assert set(a["topic"]["probabilities"]) == {"world", "sport", "tech"}
        assert sum(a["topic"]["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert a["positive"]["label"] == max(
            a["positive"]["probabilities"], key=a["positive"]["probabilities"].get
        )
        assert a["tags"]["label"] == [
            n for n, p in a["tags"]["probabilities"].items() if p > 0.5
        ]
        assert len(a["pos"]["label"]) == len(a["pos"]["probabilities"]) == num_tokens
        for task in a:
            assert a[task].keys() == b[task].keys()
            if "label" in a[task]:
                assert a[task]["label"] == b[task]["label"]
        np.testing.assert_allclose(
            list(a["topic"]["probabilities"].values()),
            list(b["topic"]["probabilities"].values()),
            atol=1e-5,
        )
        assert a["score"]["value"] == pytest.approx(b["score"]["value"], abs=1e-5)
    assert predictor.predict([]) == []
    with pytest.raises(TypeError, match="list of texts"):
        predictor.predict("one text")


def test_edge_inputs_have_defined_outputs(predictor):
    arrays = predictor.predict_arrays(
        [b"", b"\xff\xfe", "the d\ufffdog".encode(), b"the d\xffog", b"fox " * 100]
    )
    for key, value in arrays.items():
        if value.dtype.kind == "f":
            assert np.isfinite(value).all(), key
    assert arrays["num_tokens"].tolist()[0] == 2
    assert arrays["num_tokens"].tolist()[-1] == LENGTH
    # Invalid UTF-8 reads as U+FFFD.
    for key, value in arrays.items():
        np.testing.assert_array_equal(value[2], value[3], err_msg=key)
    empty_batch = predictor.predict_arrays([])
    assert empty_batch["topic_probabilities"].shape == (0, 3)


def _requests(seed, count, pool):
    rng = np.random.default_rng(seed)
    return [
        [pool[i] for i in rng.integers(0, len(pool), size=rng.integers(1, 5))]
        for _ in range(count)
    ]


def _hammer(predictor, loaded, requests_per_thread, threads=16):
    words = " ".join(sentences(20, seed=3)).split()
    pool = [b""] + [" ".join(words[:n]).encode() for n in (1, 2, 5, 9, 14, 40)]
    pool += TEXTS
    work = {t: _requests(t, requests_per_thread, pool) for t in range(threads)}
    sequential = {
        t: [predictor.predict_arrays(r) for r in reqs] for t, reqs in work.items()
    }
    traced = len(loaded.serving_default._list_all_concrete_functions())

    def client(t):
        return [predictor.predict_arrays(r) for r in work[t]]

    with concurrent.futures.ThreadPoolExecutor(threads) as pool_:
        concurrent_results = dict(zip(work, pool_.map(client, work)))
    for t in work:
        for got, want in zip(concurrent_results[t], sequential[t]):
            assert sorted(got) == sorted(want)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # The signatures have fixed input signatures: nothing new was traced.
    for batch in ([b"a"], [b"a b c"] * 7, [b""] * 3):
        loaded.serving_default(tf.constant(batch))
    assert len(loaded.serving_default._list_all_concrete_functions()) == traced


def test_concurrent_requests_match_sequential(predictor):
    _hammer(predictor, predictor._keep_alive, requests_per_thread=50)


@pytest.mark.slow
def test_concurrent_requests_match_sequential_full(predictor):
    _hammer(predictor, predictor._keep_alive, requests_per_thread=200)


def test_keras_predictor_traces_once(exported):
    predictor = mtl_export.load_for_serving(exported["bundle"])
    for batch in ([b"a"], [b"the quick brown fox"] * 5, [b""] * 2, TEXTS, []):
        predictor.predict_arrays(batch)
    assert predictor._serve.experimental_get_tracing_count() == 1


def test_pair_export(tmp_path):
    vocab = learn_vocabulary(sentences(), vocabulary_size=100)
    preprocessor = TextPreprocessor(vocab, sequence_length=LENGTH, pair=True)
    model = make_model(len(vocab), tasks=[Task("entails", "binary"), TASKS[0]])
    path = str(tmp_path / "pair")
    metadata = mtl_export.export_saved_model(model, preprocessor, path)
    assert metadata["inputs"] == ["text", "text_pair"] and metadata["pair"]
    firsts, seconds = [b"the fox", b"", b"a lazy dog " * 9], [b"a dog", b"cats", b""]
    x = {
        k: v.numpy()
        for k, v in preprocessor(tf.constant(firsts), tf.constant(seconds)).items()
    }
    loaded = mtl_export.load_saved_model(path)
    serving = loaded.signatures["serving_default"]
    assert sorted(serving.structured_input_signature[1]) == ["text", "text_pair"]
    actual = serving(text=tf.constant(firsts), text_pair=tf.constant(seconds))
    assert_outputs_match(
        {k: v.numpy() for k, v in actual.items()}, expected_outputs(model, x)
    )
    predictor = mtl_export.load_for_serving(path)
    rows = predictor.predict(["the fox"], text_pairs=["a dog"])
    assert set(rows[0]) == {"entails", "topic"}
    with pytest.raises(ValueError, match="text_pairs"):
        predictor.predict(["the fox"])


def test_lambda_keras_file_is_refused(tmp_path):
    path = str(tmp_path / "lambda.keras")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x)])
    model.save(path)
    with pytest.raises(ValueError, match="arbitrary Python code.*refuses to load"):
        mtl_export.load_keras_model(path)
    with pytest.raises(ValueError, match="arbitrary Python code"):
        mtl_export.predict_texts(path, ["a"])


def test_loader_errors(exported, tmp_path):
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a .keras file"):
        mtl_export.load_keras_model(str(h5))
    with pytest.raises(FileNotFoundError):
        mtl_export.load_keras_model(str(tmp_path / "missing.keras"))
    plain = str(tmp_path / "plain.keras")
    exported["model"].save(plain)
    assert isinstance(mtl_export.load_keras_model(plain), MultiTaskModel)
    with pytest.raises(ValueError, match="save_model_bundle"):
        mtl_export.load_for_serving(plain)
    with pytest.raises(ValueError, match="saved_model.pb"):
        mtl_export.load_for_serving(str(tmp_path))
    long_preprocessor = TextPreprocessor(
        exported["preprocessor"].tokenizer.vocabulary, sequence_length=2 * LENGTH
    )
    with pytest.raises(ValueError, match="position embedding"):
        mtl_export.export_saved_model(
            exported["model"], long_preprocessor, str(tmp_path / "x")
        )
