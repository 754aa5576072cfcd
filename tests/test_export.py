"""Shipping a MultiTaskModel: the SavedModel export, the self-contained `.keras`
file, and serving both with a `Predictor`."""

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor  # noqa: E402
from mtl_keras import export as mtl_export  # noqa: E402

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
# Plain Python strings, as a user passes them to `model.predict`.
STRINGS = ["a text", "another", "the lazy fox sleeps", "", "cats " * 30]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def sentences(count=50, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=n)) for n in rng.integers(1, 20, count)]


def make_preprocessor(pair=False):
    return TextPreprocessor.from_texts(
        sentences(), vocabulary_size=100, sequence_length=LENGTH, pair=pair
    )


def make_model(preprocessor, tasks=TASKS):
    """A tiny model that owns `preprocessor` (None: a model on token ids only)."""
    encoder = SharedEncoder(
        vocabulary_size=100 if preprocessor is None else preprocessor.vocabulary_size,
        sequence_length=LENGTH,
        hidden_dim=8,
        num_layers=1,
        num_heads=2,
        dropout=0.0,
    )
    return MultiTaskModel(tasks, encoder, preprocessor)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One model, exported once as a SavedModel and saved once as a .keras file."""
    keras.utils.set_random_seed(0)
    preprocessor = make_preprocessor()
    model = make_model(preprocessor)
    root = tmp_path_factory.mktemp("export")
    saved_model = str(root / "saved_model")
    metadata = mtl_export.export_saved_model(model, saved_model)
    keras_file = str(root / "model.keras")
    model.save(keras_file)
    return {
        "model": model,
        "preprocessor": preprocessor,
        "saved_model": saved_model,
        "keras_file": keras_file,
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


# An independent reference for each kind's serving outputs, from its logits:
# `(z, class names, padding mask) -> (probabilities, labels)`.
def _multiclass(z, names, mask):
    p = _softmax(z)
    return p, names[p.argmax(-1)]


def _binary(z, names, mask):
    p = _sigmoid(z[:, 0])
    return p, names[(p > 0.5).astype(int)]


def _multilabel(z, names, mask):
    p = _sigmoid(z)
    return p, np.array([",".join(names[row > 0.5]) for row in p], dtype=object)


def _tagging(z, names, mask):
    p = _softmax(z)
    return p, np.where(mask, names[p.argmax(-1)], "")


REFERENCE = {
    "multiclass": _multiclass,
    "binary": _binary,
    "multilabel": _multilabel,
    "tagging": _tagging,
}


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
        p, label = REFERENCE[task.kind](z, names, mask)
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


def assert_rows_match(actual, expected, atol=1e-5, where="rows"):
    """Predicted rows (nested dicts / lists) equal: labels exactly, numbers to `atol`."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected), where
        for key in expected:
            assert_rows_match(actual[key], expected[key], atol, f"{where}/{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_rows_match(a, e, atol, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=atol), where
    else:
        assert actual == expected, where


def assert_logits_match(actual, expected, atol=1e-5):
    assert sorted(actual) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(
            actual[name], expected[name], atol=atol, rtol=0, err_msg=name
        )


# --- The SavedModel -----------------------------------------------------------


def test_signatures_and_metadata(exported):
    loaded = mtl_export.load_saved_model(exported["saved_model"])
    assert set(mtl_export.SIGNATURES) <= set(loaded.signatures)
    serving = loaded.signatures["serving_default"]
    assert list(serving.structured_input_signature[1]) == ["text"]
    ids_in = loaded.signatures["serve_token_ids"]
    assert sorted(ids_in.structured_input_signature[1]) == ["padding_mask", "token_ids"]
    expected_names = {"num_tokens"}
    for task in TASKS:
        expected_names.update(task.task_kind.output_names(task))
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
    assert metadata == mtl_export.build_metadata(exported["model"])
    assert mtl_export.read_metadata(exported["saved_model"]) == metadata
    assert metadata["format_version"] == mtl_export.FORMAT_VERSION == 2
    assert metadata["inputs"] == ["text"] and not metadata["pair"]
    assert metadata["sequence_length"] == LENGTH
    # Each task entry: the Task's config, plus its classes and output names.
    assert len(metadata["tasks"]) == len(TASKS)
    for entry, task in zip(metadata["tasks"], TASKS):
        config = {k: v for k, v in entry.items() if k not in ("classes", "outputs")}
        assert Task.from_config(config) == task
        assert entry["classes"] == list(task.classes)
        assert entry["outputs"] == task.task_kind.output_names(task)
    kinds = {t["name"]: (t["kind"], t["classes"]) for t in metadata["tasks"]}
    assert kinds["topic"] == ("multiclass", ["world", "sport", "tech"])
    assert kinds["positive"] == ("binary", ["no", "yes"])
    assert kinds["score"] == ("regression", [])
    assert metadata["tasks"][3]["outputs"] == ["score_value"]


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
    _run_in_a_fresh_process(
        tmp_path, FRESH_PROCESS, exported["saved_model"], tmp_path / "texts.json", out_file
    )
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


def _saved_model_cli():
    """The `saved_model_cli` of the running environment (a venv's bin may not be on PATH)."""
    beside = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    return beside if os.path.exists(beside) else shutil.which("saved_model_cli")


@pytest.mark.skipif(_saved_model_cli() is None, reason="no saved_model_cli")
def test_saved_model_cli(exported):
    path = exported["saved_model"]
    cli = _saved_model_cli()
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
        [cli, "show", "--dir", path, "--all"],
        capture_output=True,
        text=True,
        env=ENV,
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
        env=ENV,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    for name in ("topic_label", "positive_probabilities", "score_value", "pos_label"):
        assert f"Result for output key {name}:" in ran.stdout
    stock = subprocess.run(
        [cli, *run_args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    if stock.returncode != 0:  # documents why the wrapper above is needed
        assert "Op type not registered" in stock.stderr


def test_export_needs_a_model_with_a_preprocessor(tmp_path):
    path = tmp_path / "export"
    with pytest.raises(
        ValueError,
        match="no preprocessor.*MultiTaskModel\\(tasks, encoder, preprocessor\\)",
    ):
        mtl_export.export_saved_model(make_model(None), path)
    assert not path.exists()  # refused before anything is written
    sequential = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(TypeError, match="MultiTaskModel"):
        mtl_export.export_saved_model(sequential, path)


# --- The self-contained .keras file ----------------------------------------------


def test_keras_file_is_self_contained_and_loads_in_safe_mode(exported, tmp_path):
    model, preprocessor = exported["model"], exported["preprocessor"]
    # The vocabulary travels inside the file (an asset), not in its config.
    with zipfile.ZipFile(exported["keras_file"]) as archive:
        names = archive.namelist()
        config = json.loads(archive.read("config.json"))
    assert any(n.startswith("assets/") and n.endswith("vocabulary.txt") for n in names)
    assert config["class_name"] == "MultiTaskModel"
    assert config["config"]["preprocessor"]["config"]["vocabulary"] is None
    # A copy alone in another directory loads with both loaders.
    alone = tmp_path / "elsewhere" / "copy.keras"
    alone.parent.mkdir()
    shutil.copy(exported["keras_file"], alone)
    ids = preprocessor(tf.constant(TEXTS))
    expected_from_ids = model.predict(ids, verbose=0)
    expected_from_strings = model.predict(STRINGS, verbose=0)
    expected_rows = model.predict_labels(STRINGS)
    loaders = {
        "load_keras_model": mtl_export.load_keras_model,
        "keras safe_mode": lambda p: keras.saving.load_model(p, safe_mode=True),
    }
    for how, load in loaders.items():
        restored = load(str(alone))
        assert isinstance(restored, MultiTaskModel), how
        assert restored.task_names == model.task_names, how
        assert isinstance(restored.preprocessor, TextPreprocessor), how
        assert (
            restored.preprocessor.tokenizer.get_vocabulary()
            == preprocessor.tokenizer.get_vocabulary()
        ), how
        assert restored.preprocessor.get_config() == preprocessor.get_config(), how
        assert_logits_match(restored.predict(ids, verbose=0), expected_from_ids)
        # Raw strings straight into the restored model: tokenized the same way.
        assert_logits_match(restored.predict(STRINGS, verbose=0), expected_from_strings)
        assert_rows_match(restored.predict_labels(STRINGS), expected_rows)


FRESH_KERAS_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras, mtl_keras  # importing mtl_keras registers its serializables

    path, texts_file, out_file = sys.argv[1:]
    texts = json.load(open(texts_file))  # a plain Python list of str
    model = keras.saving.load_model(path)
    outputs = model.predict(texts, verbose=0)
    rows = model.predict_labels(texts)
    np.savez(out_file + ".npz", **outputs)
    with open(out_file + ".json", "w") as f:
        json.dump({"class": type(model).__name__, "rows": rows}, f)
    """
)


def _run_in_a_fresh_process(tmp_path, source, *args):
    """Runs `source` as a script in a new Python process; fails with its stderr."""
    script = tmp_path / "fresh.py"
    script.write_text(source)
    result = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_keras_file_predicts_strings_in_a_fresh_process(exported, predictor, tmp_path):
    model = exported["model"]
    (tmp_path / "texts.json").write_text(json.dumps(STRINGS))
    out_file = str(tmp_path / "out")
    _run_in_a_fresh_process(
        tmp_path, FRESH_KERAS_PROCESS, exported["keras_file"], tmp_path / "texts.json", out_file
    )
    with np.load(out_file + ".npz") as saved:
        outputs = dict(saved)
    with open(out_file + ".json") as f:
        answer = json.load(f)
    assert answer["class"] == "MultiTaskModel"
    # Per-task logits equal to the original model's on the same list.
    assert_logits_match(outputs, model.predict(STRINGS, verbose=0))
    assert outputs["topic"].shape == (len(STRINGS), 3)
    assert outputs["pos"].shape == (len(STRINGS), LENGTH, 3)
    # Label names and probabilities equal to the SavedModel's.
    assert_rows_match(answer["rows"], predictor.predict(STRINGS))
    assert answer["rows"][0]["topic"]["label"] in ("world", "sport", "tech")


# --- Serving ----------------------------------------------------------------------


def test_predictor_outputs_are_json_and_agree_across_formats(exported, predictor):
    texts = [t.decode("utf-8", "surrogateescape") for t in TEXTS]
    from_saved_model = predictor.predict(texts, batch_size=3)
    restored = mtl_export.load_keras_model(exported["keras_file"])
    others = {
        "predict_texts(.keras)": mtl_export.predict_texts(
            exported["keras_file"], texts
        ),
        "model.predict_labels": exported["model"].predict_labels(texts, batch_size=2),
        "restored.predict_labels": restored.predict_labels(texts),
    }
    json.dumps(from_saved_model)
    assert len(from_saved_model) == len(texts)
    for a, num_tokens in zip(
        from_saved_model, predictor.predict_arrays(texts)["num_tokens"]
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
    for how, rows in others.items():
        json.dumps(rows)
        assert_rows_match(rows, from_saved_model, where=how)
    assert predictor.predict([]) == []
    assert exported["model"].predict_labels([]) == []
    with pytest.raises(TypeError, match="list of texts"):
        predictor.predict("one text")
    with pytest.raises(TypeError, match="list of texts"):
        exported["model"].predict_labels("one text")


def test_top_k_keeps_the_most_likely_classes(exported, predictor):
    model = exported["model"]
    texts = [t.decode("utf-8", "surrogateescape") for t in TEXTS[:4]]
    full = model.predict_labels(texts)
    for top_k in (1, 2):
        rows = model.predict_labels(texts, top_k=top_k)
        assert_rows_match(predictor.predict(texts, top_k=top_k), rows)
        for row, whole in zip(rows, full):
            assert row["score"] == whole["score"]  # no classes to cut
            for name in ("topic", "positive", "tags"):
                assert row[name]["label"] == whole[name]["label"]
                p, kept = whole[name]["probabilities"], row[name]["probabilities"]
                assert len(kept) == top_k
                assert list(kept) == sorted(p, key=p.get, reverse=True)[:top_k]
                assert all(kept[c] == pytest.approx(p[c]) for c in kept)
            assert row["pos"]["label"] == whole["pos"]["label"]
            assert len(row["pos"]["probabilities"]) == len(whole["pos"]["label"])
            for kept, p in zip(
                row["pos"]["probabilities"], whole["pos"]["probabilities"]
            ):
                assert list(kept) == sorted(p, key=p.get, reverse=True)[:top_k]
    # With top_k=1, the one class left is the predicted one.
    for row in model.predict_labels(texts, top_k=1):
        for name in ("topic", "positive"):
            assert list(row[name]["probabilities"]) == [row[name]["label"]]
        assert [next(iter(p)) for p in row["pos"]["probabilities"]] == row["pos"][
            "label"
        ]


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


def test_keras_serving_traces_once(exported):
    predictor = mtl_export.load_for_serving(exported["keras_file"])
    for batch in ([b"a"], [b"the quick brown fox"] * 5, [b""] * 2, TEXTS, []):
        predictor.predict_arrays(batch)
    assert predictor._serve.experimental_get_tracing_count() == 1
    # `predict_labels` runs the same function, traced once per model.
    model = predictor._keep_alive
    for texts in (["a"], ["the quick brown fox"] * 5, STRINGS):
        model.predict_labels(texts, batch_size=2)
    assert model.serve_text_function() is predictor._serve
    assert predictor._serve.experimental_get_tracing_count() == 1


def test_pair_export(tmp_path):
    preprocessor = make_preprocessor(pair=True)
    model = make_model(preprocessor, tasks=[Task("entails", "binary"), TASKS[0]])
    path = str(tmp_path / "pair")
    metadata = mtl_export.export_saved_model(model, path)
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
    rows = predictor.predict(firsts, text_pairs=seconds)
    assert set(rows[0]) == {"entails", "topic"}
    with pytest.raises(ValueError, match="text_pairs"):
        predictor.predict(["the fox"])
    # The model itself takes the pairs, and so does its .keras file.
    assert_rows_match(model.predict_labels(firsts, text_pairs=seconds), rows)
    pairs = {"text": firsts, "text_pair": seconds}
    logits = model.predict(pairs, verbose=0)
    assert_logits_match(logits, model.predict(x, verbose=0))
    keras_file = str(tmp_path / "pair.keras")
    model.save(keras_file)
    restored = mtl_export.load_keras_model(keras_file)
    assert restored.preprocessor.pair
    assert_logits_match(restored.predict(pairs, verbose=0), logits)
    assert_rows_match(
        mtl_export.predict_texts(keras_file, firsts, text_pairs=seconds), rows
    )
    with pytest.raises(ValueError, match="sentence pairs"):
        model.predict(["the fox"], verbose=0)


def test_model_refuses_a_preprocessor_its_encoder_cannot_embed():
    preprocessor = make_preprocessor()
    size = preprocessor.vocabulary_size

    def encoder(vocabulary_size=size, sequence_length=LENGTH):
        return SharedEncoder(
            vocabulary_size, sequence_length, hidden_dim=8, num_layers=1, num_heads=2
        )

    with pytest.raises(
        ValueError, match=f"vocabulary has {size} tokens.*only {size - 1}"
    ):
        MultiTaskModel(TASKS, encoder(vocabulary_size=size - 1), preprocessor)
    longer = TextPreprocessor(
        preprocessor.tokenizer.get_vocabulary(), sequence_length=LENGTH + 1
    )
    with pytest.raises(
        ValueError, match=f"packs {LENGTH + 1} tokens.*embeds only {LENGTH} positions"
    ):
        MultiTaskModel(TASKS, encoder(), longer)
    with pytest.raises(TypeError, match="TextPreprocessor"):
        MultiTaskModel(TASKS, encoder(), preprocessor.tokenizer)
    # An encoder that embeds more than the preprocessor packs is fine.
    model = MultiTaskModel(TASKS, encoder(size + 5, 2 * LENGTH), preprocessor)
    assert model.preprocessor is preprocessor


# --- Loading errors ---------------------------------------------------------------


def test_lambda_keras_file_is_refused(tmp_path):
    path = str(tmp_path / "lambda.keras")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x)])
    model.save(path)
    with pytest.raises(ValueError, match="arbitrary Python code.*refuses to load"):
        mtl_export.load_keras_model(path)
    with pytest.raises(ValueError, match="arbitrary Python code"):
        mtl_export.predict_texts(path, ["a"])


def test_loader_errors(tmp_path):
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a .keras file"):
        mtl_export.load_keras_model(str(h5))
    with pytest.raises(FileNotFoundError):
        mtl_export.load_keras_model(str(tmp_path / "missing.keras"))
    with pytest.raises(ValueError, match="Cannot serve"):
        mtl_export.load_for_serving(str(h5))
    # A model without a preprocessor loads, but cannot serve strings.
    ids_only = str(tmp_path / "ids_only.keras")
    make_model(None).save(ids_only)
    restored = mtl_export.load_keras_model(ids_only)
    assert isinstance(restored, MultiTaskModel) and restored.preprocessor is None
    with pytest.raises(ValueError, match="without a preprocessor"):
        mtl_export.load_for_serving(ids_only)
    with pytest.raises(ValueError, match="no preprocessor"):
        restored.predict(["a text"], verbose=0)
    # Directories: no SavedModel, or one not written by export_saved_model.
    with pytest.raises(ValueError, match="saved_model.pb"):
        mtl_export.load_for_serving(str(tmp_path))
    foreign = str(tmp_path / "foreign")
    tf.saved_model.save(tf.Module(), foreign)
    with pytest.raises(ValueError, match="has no mtl_keras_manifest.json"):
        mtl_export.load_for_serving(foreign)
    with pytest.raises(ValueError, match="not written by"):
        mtl_export.load_for_serving(foreign, trust_unverified=True)


def _refused(function, match, **inputs):
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        function(**{k: tf.constant(v) for k, v in inputs.items()})


def test_ids_signature_refuses_bad_inputs_naming_them(exported, predictor):
    ids_in = predictor._keep_alive.signatures["serve_token_ids"]
    vocabulary = exported["preprocessor"].vocabulary_size
    ok = np.array([[2, 5, 3, 0]], np.int32)
    mask = ok != 0
    assert ids_in(token_ids=tf.constant(ok), padding_mask=tf.constant(mask))["num_tokens"].numpy() == [3]
    long = np.full([1, LENGTH + 1], 5, np.int32)
    _refused(ids_in, rf"token_ids has more positions than sequence_length {LENGTH}.*{LENGTH + 1}",
             token_ids=long, padding_mask=long != 0)
    _refused(ids_in, rf"token_ids holds an id >= the vocabulary size {vocabulary}",
             token_ids=np.array([[2, vocabulary, 3]], np.int32), padding_mask=mask[:, :3])
    _refused(ids_in, rf"token_ids holds a negative id; ids are in \[0, {vocabulary}\)",
             token_ids=np.array([[2, -1, 3]], np.int32), padding_mask=mask[:, :3])
    _refused(ids_in, "padding_mask must have the shape of token_ids",
             token_ids=ok, padding_mask=mask[:, :3])
    _refused(ids_in, r"token_ids must be a rank-2 tensor \[batch, length\]",
             token_ids=ok[0], padding_mask=mask)
    _refused(ids_in, r"padding_mask must be a rank-2 tensor",
             token_ids=ok, padding_mask=mask[None])
    _refused(ids_in, "expected to be a int32 tensor", token_ids=ok.astype(np.int64), padding_mask=mask)


def test_text_signature_refuses_other_ranks(predictor):
    serving = predictor._keep_alive.signatures["serving_default"]
    _refused(serving, r"text must be a rank-1 tensor \[batch\]", text=[["the fox", "a dog"]])
    _refused(serving, r"text must be a rank-1 tensor", text="the fox")


def test_pair_signature_refuses_unequal_batches():
    model = make_model(make_preprocessor(pair=True))
    serve = model.serve_text_function()
    _refused(serve, "text_pair must hold one string per text", text=["a", "b"], text_pair=["c"])
