"""Shipping: a SavedModel with the tokenizer inside, and loading for serving.

Two artifacts, one set of outputs:

- `export_saved_model(model, preprocessor, path)` writes a TensorFlow
  SavedModel that takes raw strings. It loads with plain TensorFlow
  (`import tensorflow_text` first, to register the tokenizer ops; see
  `export_saved_model`) and serves with TF Serving.
- `save_model_bundle(model, preprocessor, path)` writes one `.keras` file
  holding both (a `ModelBundle`), for Keras users and further training.

`load_for_serving(path)` opens either as a `Predictor`, and
`predict_texts(path, texts)` returns one JSON-serializable dict per text.
`.keras` files are always loaded with `safe_mode=True`, and files that carry
Python code (a `Lambda` layer) are refused (`load_keras_model`).
"""

import json
import os
import tempfile
import zipfile

import keras
import tensorflow as tf

from mtl_keras.model import MultiTaskModel
from mtl_keras.preprocess import TextPreprocessor

METADATA_FILE = "mtl_keras.json"
FORMAT = "mtl_keras.saved_model"
FORMAT_VERSION = 1
THRESHOLD = 0.5  # binary and multilabel: a class is predicted when p > 0.5
SIGNATURES = ("serving_default", "serve_token_ids", "metadata")


# --- Outputs ------------------------------------------------------------------


def output_names(task):
    """The signature outputs of one task, e.g. `["topic_probabilities", "topic_label"]`."""
    if task.kind == "regression":
        return [f"{task.name}_value"]
    return [f"{task.name}_probabilities", f"{task.name}_label"]


def _task_outputs(tasks, logits, padding_mask):
    """Maps `{task: logits}` to the signature outputs (see `export_saved_model`)."""
    outputs = {"num_tokens": tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=1)}
    for task in tasks:
        z = tf.cast(logits[task.name], tf.float32)
        if task.kind == "regression":
            outputs[f"{task.name}_value"] = tf.reshape(z, [-1])
            continue
        names = tf.constant(task.classes, tf.string)
        if task.kind == "binary":
            p = tf.sigmoid(tf.reshape(z, [-1]))
            label = tf.gather(names, tf.cast(p > THRESHOLD, tf.int32))
        elif task.kind == "multilabel":
            p = tf.sigmoid(z)
            chosen = tf.ragged.boolean_mask(
                tf.broadcast_to(names, tf.shape(p)), p > THRESHOLD
            )
            label = tf.strings.reduce_join(chosen, axis=1, separator=",")
        else:  # multiclass [B, C], tagging [B, L, C]
            p = tf.nn.softmax(z, axis=-1)
            label = tf.gather(names, tf.argmax(p, axis=-1, output_type=tf.int32))
            if task.kind == "tagging":
                label = tf.where(padding_mask, label, "")
        outputs[f"{task.name}_probabilities"] = p
        outputs[f"{task.name}_label"] = label
    return outputs


def _serving_functions(model, preprocessor):
    """The strings-in and ids-in serving functions (plain Python; trace them)."""
    tasks = model.tasks

    def from_token_ids(token_ids, padding_mask):
        token_ids = tf.cast(token_ids, tf.int32)
        padding_mask = tf.cast(padding_mask, tf.bool)
        inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
        return _task_outputs(tasks, model(inputs, training=False), padding_mask)

    def from_text(text, text_pair=None):
        segments = (text,) if text_pair is None else (text, text_pair)
        x = preprocessor(*segments)
        # Cut the padding shared by the whole batch: the encoder takes any
        # length up to `sequence_length`, and short requests get cheaper.
        lengths = tf.reduce_sum(tf.cast(x["padding_mask"], tf.int32), axis=1)
        length = tf.reduce_max(tf.concat([lengths, [1]], axis=0))
        return from_token_ids(x["token_ids"][:, :length], x["padding_mask"][:, :length])

    return from_text, from_token_ids


def _text_signature(pair):
    spec = [tf.TensorSpec([None], tf.string, name="text")]
    if pair:
        spec.append(tf.TensorSpec([None], tf.string, name="text_pair"))
    return spec


IDS_SIGNATURE = [
    tf.TensorSpec([None, None], tf.int32, name="token_ids"),
    tf.TensorSpec([None, None], tf.bool, name="padding_mask"),
]


def build_metadata(model, preprocessor):
    """What an export serves: inputs, tasks, kinds, label names and outputs."""
    import mtl_keras

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mtl_keras_version": mtl_keras.__version__,
        "inputs": ["text", "text_pair"] if preprocessor.pair else ["text"],
        "pair": bool(preprocessor.pair),
        "sequence_length": int(preprocessor.sequence_length),
        "lowercase": bool(preprocessor.lowercase),
        "threshold": THRESHOLD,
        "tasks": [
            {
                "name": task.name,
                "kind": task.kind,
                "classes": list(task.classes),
                "outputs": output_names(task),
            }
            for task in model.tasks
        ],
    }


def _check_compatible(model, preprocessor):
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"Expected a MultiTaskModel, got {type(model).__name__}.")
    if not isinstance(preprocessor, TextPreprocessor):
        raise TypeError(
            f"Expected a TextPreprocessor, got {type(preprocessor).__name__}."
        )
    encoder = model.encoder.get_config()
    max_length = encoder.get("sequence_length")
    if max_length is not None and preprocessor.sequence_length > max_length:
        raise ValueError(
            f"The preprocessor packs {preprocessor.sequence_length} tokens but "
            f"the encoder's position embedding covers only {max_length}."
        )
    vocabulary_size = encoder.get("vocabulary_size")
    has_vocabulary = preprocessor.tokenizer.vocabulary is not None  # not while loading
    if (
        vocabulary_size is not None
        and has_vocabulary
        and preprocessor.vocabulary_size > vocabulary_size
    ):
        raise ValueError(
            f"The preprocessor's vocabulary has {preprocessor.vocabulary_size} "
            f"tokens but the encoder embeds only {vocabulary_size}."
        )


# --- SavedModel ---------------------------------------------------------------


def export_saved_model(model, preprocessor, path):
    """Writes a SavedModel that takes raw strings, tokenizer included.

    Signatures:
    - `serving_default(text: string [B])` — and `text_pair: string [B]`
      for a pair preprocessor — tokenizes in the graph, cuts the batch to
      its longest text (`L` <= `sequence_length`; longer texts are truncated)
      and returns the outputs below.
    - `serve_token_ids(token_ids: int32 [B, L], padding_mask: bool [B, L])`:
      the same outputs from already packed ids (`L` <= `sequence_length`).
    - `metadata()`: `{"metadata": string []}`, the JSON of `build_metadata`
      (also stored as `assets/mtl_keras.json`).

    Outputs, per task (float32 probabilities, string labels):
    - multiclass: `<task>_probabilities` [B, C] (softmax), `<task>_label`
      [B] (the arg-max class name);
    - binary: `<task>_probabilities` [B] = sigmoid = P(`classes[1]`),
      `<task>_label` [B] = `classes[1]` if p > 0.5 else `classes[0]`;
    - multilabel: `<task>_probabilities` [B, C] (sigmoid), `<task>_label` [B]
      the names with p > 0.5, joined by `","` in class order (`""` if none);
    - regression: `<task>_value` [B] (the raw output);
    - tagging: `<task>_probabilities` [B, L, C] (softmax), `<task>_label`
      [B, L] per word piece, `[CLS]` and `[SEP]` positions included, `""`
      on padding;
    - and `num_tokens` int32 [B]: the real tokens of each row.

    Loading needs the tensorflow-text ops registered: `import tensorflow_text`
    before `tf.saved_model.load(path)`. The stock `saved_model_cli run`
    cannot register them (it has no option to load op libraries), so run it
    as `python -c "import sys, tensorflow_text; from
    tensorflow.python.tools.saved_model_cli import main; sys.argv[0] =
    'saved_model_cli'; main()" run --dir PATH ...`. `saved_model_cli show`
    works as is.

    Args:
        model: a `MultiTaskModel`.
        preprocessor: the `TextPreprocessor` the model was trained with.
        path: the SavedModel directory to write.

    Returns:
        The metadata dict.
    """
    _check_compatible(model, preprocessor)
    preprocessor.build(None)
    metadata = build_metadata(model, preprocessor)
    metadata_json = json.dumps(metadata, indent=2, sort_keys=True)
    from_text, from_token_ids = _serving_functions(model, preprocessor)

    archive = keras.export.ExportArchive()
    archive.track(preprocessor)  # its lookup tables
    archive.track(model)
    archive.add_endpoint(
        "serving_default", from_text, input_signature=_text_signature(preprocessor.pair)
    )
    archive.add_endpoint(
        "serve_token_ids", from_token_ids, input_signature=IDS_SIGNATURE
    )
    archive.add_endpoint(
        "metadata",
        lambda: {"metadata": tf.constant(metadata_json)},
        input_signature=[],
    )
    with tempfile.TemporaryDirectory() as tmp:
        metadata_path = os.path.join(tmp, METADATA_FILE)
        with open(metadata_path, "w", encoding="utf-8") as f:
            f.write(metadata_json)
        # Copied to `<path>/assets/mtl_keras.json` by `write_out`.
        archive._tf_trackable.metadata_file = tf.saved_model.Asset(metadata_path)
        archive.write_out(os.fspath(path), verbose=False)
    return metadata


def read_metadata(path):
    """The metadata of an exported SavedModel, read from its assets (no TF needed)."""
    with open(os.path.join(path, "assets", METADATA_FILE), encoding="utf-8") as f:
        return json.load(f)


def load_saved_model(path):
    """`tf.saved_model.load` with the tensorflow-text ops registered."""
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

    return tf.saved_model.load(os.fspath(path))


# --- .keras files -------------------------------------------------------------


@keras.saving.register_keras_serializable(package="mtl_keras")
class ModelBundle(keras.Model):
    """A `TextPreprocessor` and a `MultiTaskModel` saved as one `.keras` file.

    `bundle(text)` (or `bundle(text, text_pair)`) returns the model's logits
    for raw strings. The vocabulary travels as an asset of the tokenizer.

    Args:
        preprocessor: a `TextPreprocessor`.
        model: a `MultiTaskModel`.

    Example:
    >>> bundle = ModelBundle(preprocessor, model)  # doctest: +SKIP
    >>> bundle.save("model.keras")  # doctest: +SKIP
    """

    def __init__(self, preprocessor, model, **kwargs):
        super().__init__(**kwargs)
        _check_compatible(model, preprocessor)
        # === Layers ===
        self.preprocessor = preprocessor
        self.multitask_model = model
        self.preprocessor.build(None)
        self.built = True

    def call(self, text, text_pair=None):
        segments = (text,) if text_pair is None else (text, text_pair)
        return self.multitask_model(self.preprocessor(*segments), training=False)

    def get_config(self):
        return {
            "preprocessor": keras.layers.serialize(self.preprocessor),
            "model": keras.layers.serialize(self.multitask_model),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["preprocessor"] = keras.layers.deserialize(config["preprocessor"])
        config["model"] = keras.layers.deserialize(config["model"])
        return cls(**config)


def save_model_bundle(model, preprocessor, path):
    """Saves `ModelBundle(preprocessor, model)` as one `.keras` file."""
    if not os.fspath(path).endswith(".keras"):
        raise ValueError(f"The bundle path must end in '.keras', got {path!r}.")
    bundle = ModelBundle(preprocessor, model)
    bundle.save(path)
    return bundle


def _code_in_config(config):
    """The class names in a `.keras` config that carry Python code, if any."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            class_name = node.get("class_name")
            if class_name in ("__lambda__", "Lambda"):
                found.append(class_name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return sorted(set(found))


def _refuse_code(path, what):
    return ValueError(
        f"{path} contains arbitrary Python code ({what}); mtl_keras loads "
        ".keras files only with safe_mode=True and refuses to load it. "
        "Rebuild the model without Lambda layers or Python lambdas."
    )


def load_keras_model(path, compile=True):
    """Loads a `.keras` file with `safe_mode=True`, refusing embedded code.

    A file whose config holds a `Lambda` layer or a serialized Python
    `lambda` is refused before anything is deserialized.

    Raises:
        ValueError: the file is not a `.keras` archive, or it contains code.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file: {path}")
    if not path.endswith(".keras") or not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a .keras file; mtl_keras loads only the .keras "
            "format (which supports safe_mode)."
        )
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


def _as_bytes(text):
    if isinstance(text, bytes):
        return text
    if not isinstance(text, str):
        raise TypeError(f"Texts must be str or bytes, got {type(text).__name__}.")
    try:  # str decoded with surrogateescape gets its original bytes back
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates become invalid UTF-8
        return text.encode("utf-8", "surrogatepass")


class Predictor:
    """Serves raw strings from an exported SavedModel or a `.keras` bundle.

    Both run the same serving function (`export_saved_model` documents its
    outputs); `predict` turns them into one JSON-serializable dict per text:
    `{task: {"label": name, "probabilities": {name: p}}}`, with for
    multilabel tasks `"label"` a list of the names with p > 0.5, for
    regression `{"value": x}`, and for tagging `"label"` and
    `"probabilities"` lists with one entry per word piece (`[CLS]` and
    `[SEP]` included). A `Predictor` is safe to call from several threads.

    Use `load_for_serving(path)` to make one.
    """

    def __init__(self, serve, metadata, source, keep_alive=None):
        self._serve = serve
        self._keep_alive = keep_alive  # the loaded object owning the variables
        self.metadata = metadata
        self.source = source

    @classmethod
    def from_saved_model(cls, path):
        loaded = load_saved_model(path)
        if "metadata" not in loaded.signatures:
            raise ValueError(
                f"{path} was not written by mtl_keras.export.export_saved_model "
                "(it has no 'metadata' signature)."
            )
        metadata = json.loads(loaded.signatures["metadata"]()["metadata"].numpy())
        return cls(loaded.signatures["serving_default"], metadata, path, loaded)

    @classmethod
    def from_keras_file(cls, path):
        bundle = load_keras_model(path, compile=False)
        if not isinstance(bundle, ModelBundle):
            raise ValueError(
                f"{path} holds a {type(bundle).__name__} without its "
                "preprocessor; save it with "
                "mtl_keras.export.save_model_bundle(model, preprocessor, path)."
            )
        preprocessor = bundle.preprocessor
        from_text, _ = _serving_functions(bundle.multitask_model, preprocessor)
        signature = _text_signature(preprocessor.pair)
        serve = tf.function(from_text, input_signature=signature, autograph=False)
        metadata = build_metadata(bundle.multitask_model, preprocessor)
        return cls(serve, metadata, path, bundle)

    @property
    def pair(self):
        return self.metadata["pair"]

    @property
    def tasks(self):
        return self.metadata["tasks"]

    def predict_arrays(self, texts, text_pairs=None):
        """Runs one batch; returns the signature outputs as numpy arrays."""
        inputs = {"text": tf.constant([_as_bytes(t) for t in texts], tf.string)}
        if self.pair:
            if text_pairs is None or len(text_pairs) != len(texts):
                raise ValueError("This model takes sentence pairs: pass text_pairs.")
            inputs["text_pair"] = tf.constant(
                [_as_bytes(t) for t in text_pairs], tf.string
            )
        elif text_pairs is not None:
            raise ValueError("This model takes single texts, not text_pairs.")
        return {k: v.numpy() for k, v in self._serve(**inputs).items()}

    def predict(self, texts, text_pairs=None, batch_size=64):
        if isinstance(texts, (str, bytes)):
            raise TypeError("predict takes a list of texts, not one string.")
        texts = list(texts)
        text_pairs = None if text_pairs is None else list(text_pairs)
        results = []
        for start in range(0, len(texts), batch_size):
            stop = start + batch_size
            pairs = None if text_pairs is None else text_pairs[start:stop]
            outputs = self.predict_arrays(texts[start:stop], pairs)
            results.extend(self._to_dicts(outputs))
        return results

    __call__ = predict

    def _to_dicts(self, outputs):
        rows = []
        for i, num_tokens in enumerate(outputs["num_tokens"]):
            row = {}
            for task in self.tasks:
                name, kind, classes = task["name"], task["kind"], task["classes"]
                if kind == "regression":
                    row[name] = {"value": float(outputs[f"{name}_value"][i])}
                    continue
                p = outputs[f"{name}_probabilities"][i]
                label = outputs[f"{name}_label"][i]
                if kind == "binary":
                    row[name] = {
                        "label": label.decode(),
                        "probabilities": {
                            classes[0]: 1.0 - float(p),
                            classes[1]: float(p),
                        },
                    }
                elif kind == "multilabel":
                    row[name] = {
                        "label": [c for c, q in zip(classes, p) if q > THRESHOLD],
                        "probabilities": dict(zip(classes, map(float, p))),
                    }
                elif kind == "tagging":
                    row[name] = {
                        "label": [t.decode() for t in label[:num_tokens]],
                        "probabilities": [
                            dict(zip(classes, map(float, q))) for q in p[:num_tokens]
                        ],
                    }
                else:
                    row[name] = {
                        "label": label.decode(),
                        "probabilities": dict(zip(classes, map(float, p))),
                    }
            rows.append(row)
        return rows


def load_for_serving(path):
    """A `Predictor` for an exported SavedModel directory or a `.keras` bundle."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(f"{path} is a directory without a saved_model.pb.")
        return Predictor.from_saved_model(path)
    if path.endswith(".keras"):
        return Predictor.from_keras_file(path)
    raise ValueError(
        f"Cannot serve {path!r}: expected a SavedModel directory written by "
        "export_saved_model or a .keras file written by save_model_bundle."
    )


def predict_texts(path, texts, text_pairs=None, batch_size=64):
    """Loads `path` (SavedModel dir or `.keras` bundle) and predicts `texts`.

    Returns one JSON-serializable dict per text (see `Predictor`).

    Example:
    >>> predict_texts("export/", ["a fine film"])  # doctest: +SKIP
    [{'sentiment': {'label': 'positive', 'probabilities': {...}}}]
    """
    return load_for_serving(path).predict(texts, text_pairs, batch_size=batch_size)
