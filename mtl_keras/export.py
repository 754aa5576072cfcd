"""Shipping: a SavedModel with the tokenizer inside, and loading for serving.

- `export_saved_model(model, path)` writes a TensorFlow SavedModel of a
  `MultiTaskModel` with a preprocessor. It takes raw strings, loads with
  plain TensorFlow (`import tensorflow_text` first, to register the
  tokenizer ops) and serves with TF Serving.
- `model.save("model.keras")` is the other artifact: self-contained, since
  the model owns its preprocessor (the vocabulary is an asset of the file).

`load_for_serving(path)` opens either as a `Predictor`,
`predict_texts(path, texts)` returns one JSON-serializable dict per text,
and `predict_records(path, lines)` (what `mtl-keras predict` prints) the
same with each input echoed first.
`.keras` files are always loaded with `safe_mode=True`, and files that carry
Python code (a `Lambda` layer) are refused (`load_keras_model`).

Every export ends with a SHA-256 manifest of its files
(`mtl_keras.manifest`), and every loader here checks it before TensorFlow
opens the SavedModel (loading one runs its graph): a changed, missing or
extra file, or no manifest, is refused unless `trust_unverified=True`.
"""

import json
import os
import re
import tempfile
import zipfile

import keras
import tensorflow as tf

from mtl_keras import __version__, _compat
from mtl_keras.kinds import THRESHOLD, format_rows
from mtl_keras.manifest import verify_keras_file, verify_manifest, write_manifest
from mtl_keras.model import MultiTaskModel
from mtl_keras.preprocess import to_bytes
from mtl_keras.tasks import Task
from mtl_keras.warmup import write_warmup_requests

METADATA_FILE = "mtl_keras.json"
FORMAT = "mtl_keras.saved_model"
FORMAT_VERSION = 2
SIGNATURES = ("serving_default", "serve_token_ids", "metadata")


def build_metadata(model):
    """What an export serves: inputs, tasks (with their configs) and outputs.

    Example:
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> preprocessor = TextPreprocessor(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "fun"], 8)
    >>> tasks = [Task("liked", "binary")]
    >>> build_metadata(MultiTaskModel(tasks, SharedEncoder(5, 8), preprocessor))["tasks"][0]["outputs"]
    ['liked_probabilities', 'liked_label']
    """
    preprocessor = model.preprocessor
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mtl_keras_version": __version__,
        "inputs": ["text", "text_pair"] if preprocessor.pair else ["text"],
        "pair": bool(preprocessor.pair),
        "sequence_length": int(preprocessor.sequence_length),
        "lowercase": bool(preprocessor.lowercase),
        "threshold": THRESHOLD,
        "tasks": [
            {
                **task.get_config(),
                "classes": list(task.classes),
                "outputs": task.task_kind.output_names(task),
            }
            for task in model.tasks
        ],
    }


def export_saved_model(model, path):
    """Writes a SavedModel that takes raw strings, tokenizer included.

    Signatures:
    - `serving_default(text: string [B])` — and `text_pair: string [B]`
      for a pair preprocessor — tokenizes in the graph, cuts the batch to
      its longest text (`L` <= `sequence_length`; longer texts are
      truncated) and returns `model.serve_text`'s outputs: per task those
      of its kind (`TaskKind.serving_outputs`: `<task>_probabilities` and
      `<task>_label`, or `<task>_value` for regression), and `num_tokens`.
    - `serve_token_ids(token_ids: int32 [B, L], padding_mask: bool [B, L])`:
      the same outputs from already packed ids (`L` <= `sequence_length`,
      ids in `[0, vocabulary_size)`, the mask of the ids' shape; other
      inputs fail with an `InvalidArgumentError` naming the input).
    - `metadata()`: `{"metadata": string []}`, the JSON of `build_metadata`
      (also stored as `assets/mtl_keras.json`).

    Last, `mtl_keras_manifest.json` records the SHA-256 of every file
    written (`mtl_keras.manifest`); mtl_keras's loaders verify it.

    Loading needs the tensorflow-text ops registered: `import tensorflow_text`
    before `tf.saved_model.load(path)`. The stock `saved_model_cli run`
    cannot register them (it has no option to load op libraries), so run it
    as `python -c "import sys, tensorflow_text; from
    tensorflow.python.tools.saved_model_cli import main; sys.argv[0] =
    'saved_model_cli'; main()" run --dir PATH ...`. `saved_model_cli show`
    works as is.

    Args:
        model: a `MultiTaskModel` with a preprocessor.
        path: the SavedModel directory to write.

    Returns:
        The metadata dict.

    Example:
    >>> import tempfile
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> preprocessor = TextPreprocessor.from_texts(["good film", "bad film"],
    ...                                            vocabulary_size=20, sequence_length=8)
    >>> encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8,
    ...                                          num_layers=1, num_heads=2)
    >>> model = MultiTaskModel([Task("positive", "binary")], encoder, preprocessor)
    >>> path = tempfile.mkdtemp() + "/export"
    >>> export_saved_model(model, path)["tasks"][0]["outputs"]
    ['positive_probabilities', 'positive_label']
    >>> load_for_serving(path).predict(["good film"])[0]["positive"]["label"] in ("0", "1")
    True
    """
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"Expected a MultiTaskModel, got {type(model).__name__}.")
    preprocessor = model._require_preprocessor()
    preprocessor.build(None)
    metadata = build_metadata(model)
    metadata_json = json.dumps(metadata, indent=2, sort_keys=True)

    archive = keras.export.ExportArchive()
    archive.track(preprocessor)  # its lookup tables
    archive.track(model)
    endpoints = {  # name: (function, input signature), as in SIGNATURES
        "serving_default": (model.serve_text, model.text_signature()),
        "serve_token_ids": (model.serve_token_ids, model.ids_signature()),
        "metadata": (lambda: {"metadata": tf.constant(metadata_json)}, []),
    }
    for name, (function, signature) in endpoints.items():
        # Traced here, once: given the plain function, `ExportArchive` traces it
        # to list its variables and `tf.saved_model.save` again under its save
        # context (a different tracing key), which doubled the export's time
        # (9 s of the default run's 16 s after training). Wrapping the concrete
        # function makes both of those traces a call to it.
        traced = tf.function(function, input_signature=signature, autograph=False)
        archive.add_endpoint(name, traced.get_concrete_function(), input_signature=signature)
    with tempfile.TemporaryDirectory() as tmp:
        metadata_path = os.path.join(tmp, METADATA_FILE)
        with open(metadata_path, "w", encoding="utf-8") as f:
            f.write(metadata_json)
        # Copied to `<path>/assets/mtl_keras.json` by `write_out`.
        _compat.attach_asset(archive, "metadata_file", metadata_path)
        archive.write_out(os.fspath(path), verbose=False)
    write_warmup_requests(os.fspath(path), metadata["inputs"], metadata["sequence_length"])
    write_manifest(path)  # the last step: it lists every file written above
    return metadata


def read_metadata(path):
    """The metadata of an exported SavedModel, read from its assets (no TF needed).

    Example:
    >>> import tempfile
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> preprocessor = TextPreprocessor(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "fun"], 8, pair=True)
    >>> model = MultiTaskModel([Task("entails", "binary")], SharedEncoder(5, 8), preprocessor)
    >>> directory = tempfile.mkdtemp()  # export_saved_model fills it
    >>> _ = export_saved_model(model, directory)
    >>> read_metadata(directory)["inputs"]
    ['text', 'text_pair']
    """
    with open(os.path.join(path, "assets", METADATA_FILE), encoding="utf-8") as f:
        return json.load(f)


def load_saved_model(path, trust_unverified=False):
    """`tf.saved_model.load` with the tensorflow-text ops registered, once
    the directory's manifest is verified (`manifest.verify_manifest`).

    Raises:
        ManifestError: a file differs from the manifest, or there is none;
            `trust_unverified=True` loads a foreign SavedModel unchecked.

    Example:
    >>> import tempfile
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> preprocessor = TextPreprocessor.from_texts(["five stars", "one star"], 12, 6)
    >>> encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=4, num_layers=1)
    >>> saved = tempfile.mkdtemp()
    >>> metadata = export_saved_model(MultiTaskModel([Task("stars", "regression")], encoder, preprocessor), saved)
    >>> sorted(load_saved_model(saved).signatures)
    ['metadata', 'serve_token_ids', 'serving_default']
    """
    verify_manifest(path, trust_unverified=trust_unverified)  # before any code runs
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

    return tf.saved_model.load(os.fspath(path))


# --- .keras files -------------------------------------------------------------


def _code_in_config(config):
    """The class names in a `.keras` config that carry Python code, if any."""
    # In canonical JSON a `"class_name": "..."` pair is a key and its value:
    # quotes inside strings are escaped.
    found = re.findall(r'"class_name": "(Lambda|__lambda__)"', json.dumps(config))
    return sorted(set(found))


def _refuse_code(path, what):
    return ValueError(
        f"{path} contains arbitrary Python code ({what}); mtl_keras loads "
        ".keras files only with safe_mode=True and refuses to load it. "
        "Rebuild the model without Lambda layers or Python lambdas."
    )


def load_keras_model(path, compile=True, trust_unverified=False, require_manifest=False):
    """Loads a `.keras` file with `safe_mode=True`, refusing embedded code.

    A file whose config holds a `Lambda` layer or a serialized Python
    `lambda` is refused before anything is deserialized. A file with a
    manifest beside it (a run directory's `model.keras`) must match it;
    `require_manifest=True` refuses a file without one.

    Raises:
        ValueError: the file is not a `.keras` archive, or it contains code.
        ManifestError: it differs from its manifest (`trust_unverified=True`
            skips the check).

    Example:
    >>> import tempfile
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> topic = Task("topic", "multiclass", 3, label_names=("art", "law", "war"))
    >>> preprocessor = TextPreprocessor(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "court"], 8)
    >>> file = tempfile.mkdtemp() + "/topic.keras"
    >>> MultiTaskModel([topic], SharedEncoder(5, 8, hidden_dim=4), preprocessor).save(file)
    >>> load_keras_model(file).tasks[0].classes
    ('art', 'law', 'war')
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file: {path}")
    if not path.endswith(".keras") or not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a .keras file; mtl_keras loads only the .keras "
            "format (which supports safe_mode)."
        )
    verify_keras_file(path, trust_unverified, required=require_manifest)
    with zipfile.ZipFile(path) as archive:
        try:
            config = json.loads(archive.read("config.json"))
        except KeyError:
            raise ValueError(f"{path} has no config.json; not a .keras file.") from None
    code = _code_in_config(config)
    if code:
        raise _refuse_code(path, "a " + " / ".join(code) + " layer or function")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except ValueError as error:
        if "safe_mode" in str(error):
            raise _refuse_code(path, "rejected by Keras safe_mode") from error
        raise


# --- Serving ------------------------------------------------------------------


class Predictor:
    """Serves raw strings from an exported SavedModel or a `.keras` file.

    Both run the same serving function (`MultiTaskModel.serve_text`);
    `predict` turns its outputs into one JSON-serializable dict per text,
    formatted by each task's kind (see `MultiTaskModel.predict_labels`). A
    `Predictor` is safe to call from several threads.

    Use `load_for_serving(path)` to make one.

    Example:
    >>> import tempfile
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> preprocessor = TextPreprocessor.from_texts(["good film", "bad film"], 20, sequence_length=8)
    >>> encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8, num_layers=1)
    >>> model = MultiTaskModel([Task("liked", "binary")], encoder, preprocessor)
    >>> path = tempfile.mkdtemp() + "/model.keras"
    >>> model.save(path)
    >>> predictor = load_for_serving(path)
    >>> sorted(predictor.predict(["good film"])[0]["liked"]["probabilities"])
    ['0', '1']
    """

    def __init__(self, serve, metadata, source, keep_alive=None):
        self._serve = serve
        self._keep_alive = keep_alive  # the loaded object owning the variables
        self.metadata = metadata
        self.source = source
        served = ("classes", "outputs")  # metadata beside each task's config
        self.tasks = [
            Task.from_config({k: v for k, v in t.items() if k not in served})
            for t in metadata["tasks"]
        ]

    @classmethod
    def from_saved_model(cls, path, trust_unverified=False):
        loaded = load_saved_model(path, trust_unverified=trust_unverified)
        if "metadata" not in loaded.signatures:
            raise ValueError(
                f"{path} was not written by mtl_keras.export.export_saved_model "
                "(it has no 'metadata' signature)."
            )
        metadata = json.loads(loaded.signatures["metadata"]()["metadata"].numpy())
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT or not metadata.get("tasks"):
            raise ValueError(
                f"{path} was not written by mtl_keras.export.export_saved_model "
                f"(its 'metadata' signature is not of format {FORMAT!r} with tasks)."
            )
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path} is an mtl_keras export of format version "
                f"{metadata.get('format_version')}; this mtl_keras reads version "
                f"{FORMAT_VERSION}: export the model again."
            )
        return cls(loaded.signatures["serving_default"], metadata, path, loaded)

    @classmethod
    def from_keras_file(cls, path, trust_unverified=False):
        model = load_keras_model(path, compile=False, trust_unverified=trust_unverified)
        if not isinstance(model, MultiTaskModel) or model.preprocessor is None:
            raise ValueError(
                f"{path} holds a {type(model).__name__} without a preprocessor; "
                "build it as MultiTaskModel(tasks, encoder, preprocessor)."
            )
        return cls(model.serve_text_function(), build_metadata(model), path, model)

    @property
    def pair(self):
        return self.metadata["pair"]

    def predict_arrays(self, texts, text_pairs=None):
        """Runs one batch; returns the signature outputs as numpy arrays."""
        columns = {"text": texts}
        if self.pair:
            if text_pairs is None or len(text_pairs) != len(texts):
                raise ValueError("This model takes sentence pairs: pass text_pairs.")
            columns["text_pair"] = text_pairs
        elif text_pairs is not None:
            raise ValueError("This model takes single texts, not text_pairs.")
        inputs = {k: tf.constant([to_bytes(t) for t in v], tf.string) for k, v in columns.items()}
        return {k: v.numpy() for k, v in self._serve(**inputs).items()}

    def predict(self, texts, text_pairs=None, batch_size=64, top_k=None):
        if isinstance(texts, (str, bytes)):
            raise TypeError("predict takes a list of texts, not one string.")
        texts = list(texts)
        text_pairs = None if text_pairs is None else list(text_pairs)
        results = []
        for start in range(0, len(texts), batch_size):
            stop = start + batch_size
            pairs = None if text_pairs is None else text_pairs[start:stop]
            outputs = self.predict_arrays(texts[start:stop], pairs)
            results.extend(format_rows(self.tasks, outputs, top_k=top_k))
        return results

    __call__ = predict


def load_for_serving(path, trust_unverified=False):
    """A `Predictor` for an exported SavedModel directory or a `.keras` file.

    Both are verified against their manifest first (`load_saved_model`,
    `load_keras_model`); `trust_unverified=True` skips that, for a foreign
    SavedModel from a source you trust.

    Example:
    >>> load_for_serving("model.txt")
    Traceback (most recent call last):
    ...
    ValueError: Cannot serve 'model.txt': expected a SavedModel directory written by export_saved_model or a .keras file of a MultiTaskModel.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(f"{path} is a directory without a saved_model.pb.")
        return Predictor.from_saved_model(path, trust_unverified)
    if path.endswith(".keras"):
        return Predictor.from_keras_file(path, trust_unverified)
    raise ValueError(
        f"Cannot serve {path!r}: expected a SavedModel directory written by "
        "export_saved_model or a .keras file of a MultiTaskModel."
    )


def predict_texts(path, texts, text_pairs=None, batch_size=64, top_k=None, trust_unverified=False):
    """Loads `path` (SavedModel dir or `.keras` file) and predicts `texts`.

    Returns one JSON-serializable dict per text (see `Predictor`).

    Example:
    >>> import tempfile
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> preprocessor = TextPreprocessor(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "pets"], 6)
    >>> tags = Task("tags", "multilabel", 3, label_names=("cats", "dogs", "fish"))
    >>> model = MultiTaskModel([tags], SharedEncoder(5, 6, hidden_dim=4), preprocessor)
    >>> model.save(keras_file := tempfile.mkdtemp() + "/tags.keras")
    >>> len(predict_texts(keras_file, ["pets"], top_k=2)[0]["tags"]["probabilities"])
    2
    """
    return load_for_serving(path, trust_unverified).predict(
        texts, text_pairs, batch_size=batch_size, top_k=top_k
    )


ECHO_KEYS = ("text", "text_pair")


def _shown(text):
    """A text as JSON shows it: the bytes of a surrogate-escaped `str` decoded."""
    return to_bytes(text).decode("utf-8", "replace")


def predict_records(path, lines, batch_size=64, top_k=None, trust_unverified=False):
    """One dict per input line, the input first: `{"text": ..., task: ...}`.

    For a sentence-pair model each line is `text<TAB>text_pair`, and both
    are echoed. `top_k` keeps the K most likely classes of each
    multiclass, multilabel and binary task (and adds each word's K most
    likely tags for tagging tasks); regression values are unchanged.
    `trust_unverified` as for `load_for_serving`.

    Raises:
        ValueError: `top_k` below 1, a pair line without a tab, or a task
            named like an echoed input (`text`, `text_pair`).

    Example:
    >>> import tempfile
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> preprocessor = TextPreprocessor(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "pets"], 6)
    >>> tags = Task("tags", "multilabel", 3, label_names=("cats", "dogs", "fish"))
    >>> model = MultiTaskModel([tags], SharedEncoder(5, 6, hidden_dim=4), preprocessor)
    >>> model.save(keras_file := tempfile.mkdtemp() + "/tags.keras")
    >>> record = predict_records(keras_file, ["pets"], top_k=1)[0]
    >>> list(record), record["text"], len(record["tags"]["probabilities"])
    (['text', 'tags'], 'pets', 1)
    """
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be 1 or more, got {top_k}.")
    predictor = load_for_serving(path, trust_unverified=trust_unverified)
    clash = [t.name for t in predictor.tasks if t.name in ECHO_KEYS]
    if clash:
        raise ValueError(
            f"{path} has a task named {clash[0]!r}, the key of the echoed input: "
            "use Predictor.predict, whose dicts hold the tasks only."
        )
    lines = list(lines)
    pairs = None
    if predictor.pair:
        for number, line in enumerate(lines, 1):
            if "\t" not in line:
                raise ValueError(
                    f"{path} takes sentence pairs: input line {number} ({line[:60]!r}) has "
                    "no tab; give each as `text<TAB>text_pair`."
                )
        lines, pairs = zip(*(line.split("\t", 1) for line in lines)) if lines else ((), ())
        lines, pairs = list(lines), list(pairs)
    results = predictor.predict(lines, pairs, batch_size=batch_size, top_k=top_k)
    inputs = zip(lines, pairs) if pairs is not None else ((t,) for t in lines)
    return [
        {**{k: _shown(v) for k, v in zip(ECHO_KEYS, given)}, **result}
        for given, result in zip(inputs, results)
    ]
