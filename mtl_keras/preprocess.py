"""Tokenization and batching: raw examples → `(x, y, sample_weight)` batches."""

import math

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from mtl_keras import _compat

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
RESERVED_TOKENS = (PAD, UNK, CLS, SEP, MASK)
TRUNCATION_MODES = ("round_robin", "waterfall")


def clean_text(text):
    """Replaces invalid UTF-8 bytes with U+FFFD (the text policy of this module).

    Example:
    >>> latin1 = bytes([99, 97, 102, 233])  # "café" in Latin-1: invalid UTF-8
    >>> clean_text(tf.constant(latin1)).numpy().decode() == "caf" + chr(0xFFFD)
    True
    """
    return tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")


def learn_vocabulary(
    texts, vocabulary_size, lowercase=True, reserved_tokens=RESERVED_TOKENS
):
    """Learns a WordPiece vocabulary, with `"[PAD]"` as id 0.

    Args:
        texts: a list of strings or a `tf.data.Dataset` of strings (scalars
            or batches). Invalid UTF-8 is cleaned as in `TextPreprocessor`.
        vocabulary_size: the maximum number of tokens, reserved ones included.
        lowercase: must match the `TextPreprocessor` that uses the vocabulary.
        reserved_tokens: tokens put first, in order; must start with
            `"[PAD]"` and contain `"[UNK]"`, `"[CLS]"` and `"[SEP]"`.

    Returns:
        The vocabulary as a list of tokens.

    Example:
    >>> vocab = learn_vocabulary(["the cat sat", "the dog ran"], 40)
    >>> vocab[:4]
    ['[PAD]', '[UNK]', '[CLS]', '[SEP]']
    """
    reserved_tokens = list(reserved_tokens)
    if not reserved_tokens or reserved_tokens[0] != PAD:
        raise ValueError(f"reserved_tokens must start with {PAD!r} (id 0).")
    missing = [t for t in (UNK, CLS, SEP) if t not in reserved_tokens]
    if missing:
        raise ValueError(f"reserved_tokens must contain {missing}.")
    if not isinstance(texts, tf.data.Dataset):
        # A list given to keras-hub would be read as file names.
        texts = tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), tf.string))
    spec = texts.element_spec
    if not isinstance(spec, tf.TensorSpec) or spec.dtype != tf.string:
        raise ValueError(
            "learn_vocabulary needs a dataset of strings, got elements "
            f"{spec}; map raw examples first, e.g. "
            "`ds.map(lambda features, labels, masks: features['text'])`."
        )
    return keras_hub.tokenizers.compute_word_piece_vocabulary(
        texts.map(clean_text, num_parallel_calls=tf.data.AUTOTUNE),
        vocabulary_size,
        lowercase=lowercase,
        reserved_tokens=reserved_tokens,
    )


@keras.saving.register_keras_serializable(package="mtl_keras")
class TextPreprocessor(keras.layers.Layer):
    """Turns strings into packed WordPiece ids and a padding mask.

    Returns `{"token_ids": int32 [B, L], "padding_mask": bool [B, L]}` for a
    batch of strings (`[L]` for a single string), laid out as
    `[CLS] text [SEP]`, or `[CLS] text [SEP] text_pair [SEP]` when
    `pair=True`, and padded with `[PAD]` (id 0) to `L = sequence_length`.
    Longer texts are truncated; `[SEP]` is always kept.

    Text policy, the same eagerly, in `tf.data` and in a `tf.function` or
    SavedModel (all run the TensorFlow code path of keras-hub):
    - invalid UTF-8 bytes are replaced by U+FFFD before tokenization; a word
      containing one usually becomes `[UNK]`;
    - an empty (or whitespace-only) text packs to `[CLS] [SEP]`
      (`[CLS] [SEP] [SEP]` for an empty pair).

    The vocabulary is saved as an asset of the `.keras` file by the
    keras-hub tokenizer; it is not part of `get_config()`.

    Args:
        vocabulary: a list of tokens or the path of a file with one token
            per line, with `"[PAD]"` first and containing `"[UNK]"`,
            `"[CLS]"` and `"[SEP]"` (see `learn_vocabulary`).
        sequence_length: the length every sequence is packed to.
        lowercase: whether to case-fold the text (as the vocabulary was).
        pair: whether inputs are sentence pairs, `call(text, text_pair)`.
        truncate: how pairs are shortened: `"round_robin"` takes one token
            at a time from each segment, `"waterfall"` cuts the last first.

    Example:
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat"]
    >>> preprocessor = TextPreprocessor(vocab, sequence_length=6)
    >>> preprocessor(["the cat sat", "the dog"])["token_ids"].numpy().tolist()
    [[2, 4, 5, 6, 3, 0], [2, 4, 1, 3, 0, 0]]
    >>> learned = TextPreprocessor.from_texts(["the cat sat"], vocabulary_size=20,
    ...                                       sequence_length=8)
    >>> learned.vocabulary_size <= 20
    True
    """

    def __init__(
        self,
        vocabulary=None,
        sequence_length=128,
        lowercase=True,
        pair=False,
        truncate="round_robin",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_packing(sequence_length, pair, truncate)
        # Strings are not converted to backend tensors, and eager calls run
        # the same TensorFlow ops as tf.data (not keras-hub's Python path).
        _compat.accept_strings(self)

        # === Layers ===
        self.tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
            vocabulary=vocabulary,
            lowercase=lowercase,
            oov_token=UNK,
            dtype="int32",
            **_compat.TENSORFLOW_ONLY,
            name="tokenizer",
        )
        if vocabulary is not None and self.tokenizer.token_to_id(PAD) != 0:
            raise ValueError(f"{PAD!r} must be the first token (id 0).")

        # === Config ===
        self.sequence_length = sequence_length
        self.lowercase = lowercase
        self.pair = pair
        self.truncate = truncate
        # All state exists now; built layers can be tracked for export.
        self.build()

    @classmethod
    def from_texts(
        cls,
        texts,
        vocabulary_size=8000,
        sequence_length=128,
        lowercase=True,
        pair=False,
        truncate="round_robin",
        **kwargs,
    ):
        """A preprocessor with a vocabulary learned from `texts`.

        Args:
            texts: training texts, see `learn_vocabulary`.
            vocabulary_size: the most tokens to learn, reserved ones included.
            sequence_length, lowercase, pair, truncate: as for the constructor.
        """
        check_packing(sequence_length, pair, truncate)
        vocabulary = learn_vocabulary(texts, vocabulary_size, lowercase=lowercase)
        return cls(vocabulary, sequence_length, lowercase, pair, truncate, **kwargs)

    def check_encoder(self, encoder):
        """Raises if `encoder` cannot embed what this preprocessor packs.

        Reads the encoder's `sequence_length` and `vocabulary_size` (None: no limit).
        """
        max_length = getattr(encoder, "sequence_length", None)
        if max_length is not None and self.sequence_length > max_length:
            raise ValueError(
                f"The preprocessor packs {self.sequence_length} tokens but the "
                f"encoder embeds only {max_length} positions."
            )
        vocabulary_size = getattr(encoder, "vocabulary_size", None)
        loaded = self.tokenizer.vocabulary is not None  # not while loading a file
        if vocabulary_size is not None and loaded and self.vocabulary_size > vocabulary_size:
            raise ValueError(
                f"The preprocessor's vocabulary has {self.vocabulary_size} "
                f"tokens but the encoder embeds only {vocabulary_size}."
            )

    def build(self, *args, **kwargs):
        self.tokenizer.build(None)

    @property
    def vocabulary_size(self):
        return self.tokenizer.vocabulary_size()

    def call(self, text, text_pair=None, sequence_length=None):
        sequence_length = sequence_length or self.sequence_length
        segments = (text,) if text_pair is None else (text, text_pair)
        if len(segments) != (2 if self.pair else 1):
            raise ValueError(
                f"TextPreprocessor(pair={self.pair}) was called with "
                f"{len(segments)} text input(s)."
            )
        segments = tuple(self._tokenize(s) for s in segments)
        # The packers are built here, from the tokenizer's current vocabulary,
        # because a `.keras` file restores that vocabulary after `__init__`.
        ids = {t: self.tokenizer.token_to_id(t) for t in (CLS, SEP, PAD)}
        packer = keras_hub.layers.MultiSegmentPacker(
            sequence_length,
            start_value=ids[CLS],
            end_value=ids[SEP],
            pad_value=ids[PAD],
            truncate=self.truncate,
            **_compat.TENSORFLOW_ONLY,
        )
        token_ids, _ = packer(segments)  # no text token is [PAD]: it is split
        return {
            "token_ids": tf.cast(token_ids, "int32"),
            "padding_mask": token_ids != ids[PAD],
        }

    def _tokenize(self, text):
        text = tf.convert_to_tensor(text)
        if text.dtype != tf.string:
            raise ValueError(f"TextPreprocessor takes strings, got {text.dtype}.")
        tokens = self.tokenizer(clean_text(text))
        if isinstance(tokens, list):
            # Eagerly, keras-hub hands ragged batches back as Python lists.
            tokens = tf.ragged.constant(tokens, dtype="int32", ragged_rank=1)
        return tokens

    def compute_output_spec(self, text, text_pair=None, sequence_length=None):
        shape = tuple(text.shape) + (sequence_length or self.sequence_length,)
        return {
            "token_ids": keras.KerasTensor(shape, dtype="int32"),
            "padding_mask": keras.KerasTensor(shape, dtype="bool"),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary": None,  # saved as an asset by the tokenizer
            "sequence_length": self.sequence_length,
            "lowercase": self.lowercase,
            "pair": self.pair,
            "truncate": self.truncate,
        }


def check_packing(sequence_length, pair=False, truncate="round_robin"):
    """Validates the packing arguments of `TextPreprocessor` (and its config).

    Example:
    >>> check_packing(2, pair=True)
    Traceback (most recent call last):
    ...
    ValueError: sequence_length 2 is too short.
    """
    if truncate not in TRUNCATION_MODES:
        raise ValueError(f"truncate must be one of {TRUNCATION_MODES}, got {truncate!r}.")
    if (
        isinstance(sequence_length, bool)
        or not isinstance(sequence_length, int)
        or sequence_length < (3 if pair else 2)
    ):
        raise ValueError(f"sequence_length {sequence_length!r} is too short.")


def text_inputs(x):
    """`{"text": [...]}` (with `"text_pair"`) if `x` holds raw strings, else None.

    Example:
    >>> text_inputs(["a text"]), text_inputs({"token_ids": [[2, 3]]})
    ({'text': ['a text']}, None)
    """
    if isinstance(x, dict) and "text" in x and "token_ids" not in x:
        return x
    if isinstance(x, (list, tuple)) and x and all(isinstance(t, (str, bytes)) for t in x):
        return {"text": list(x)}
    if isinstance(x, np.ndarray) and x.dtype.kind in "USO" and x.ndim == 1:
        return {"text": list(x)}
    if isinstance(x, tf.Tensor) and x.dtype == tf.string:
        return {"text": list(x.numpy())}
    return None


def to_bytes(text):
    """UTF-8 bytes of a text; a `str` read with surrogateescape gets its bytes back.

    Example:
    >>> list(to_bytes("café"))
    [99, 97, 102, 195, 169]
    """
    if isinstance(text, bytes):
        return text
    if not isinstance(text, str):
        raise TypeError(f"Texts must be str or bytes, got {type(text).__name__}.")
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates become invalid UTF-8
        return text.encode("utf-8", "surrogatepass")


def bucket_lengths(sequence_length, bucket_boundaries=None):
    """The lengths batches are padded to: boundaries below `sequence_length`,
    then `sequence_length` itself. Defaults to 16, 32, 64, ... (doubling).

    Example:
    >>> bucket_lengths(100)
    (16, 32, 64, 100)
    """
    if bucket_boundaries is None:
        bucket_boundaries = [16]
        while bucket_boundaries[-1] < sequence_length:
            bucket_boundaries.append(2 * bucket_boundaries[-1])
    below = {int(b) for b in bucket_boundaries if 0 < b < sequence_length}
    return tuple(sorted(below)) + (sequence_length,)


_BATCHES_PER_CHUNK = 32  # batches grouped by bucket together in make_batches


def make_batches(
    dataset,
    preprocessor,
    batch_size,
    bucket_boundaries=None,
    shuffle_buffer=None,
    seed=None,
    drop_remainder=False,
    pad_to_fixed_length=False,
    keep_order=False,
):
    """Tokenizes raw examples and batches them by length.

    Takes the unbatched `(features, labels, masks)` dataset of
    `mtl_keras.data` and returns `(x, y, sample_weight)` batches (see
    `docs/CONTRACTS.md`): `x` from `preprocessor`, `y = labels` and
    `sample_weight = masks`, batched unchanged.

    Length-aware batching (bucketing), vectorized: the stream is cut into
    chunks of 32 batches; each chunk is tokenized at once, grouped by bucket
    (the smallest of `bucket_lengths(...)` that holds an example; stream
    order kept within a bucket), split into batches, and each batch is
    padded to the bucket of its longest example. So a batch has one of a few
    lengths (a bounded number of traced shapes), and the batches of a chunk
    come out in a seeded random order. Only the stream's last chunk can end
    in a partial batch: it is kept (every example appears exactly once)
    unless `drop_remainder=True`. Tagging labels (integer labels per word)
    are not supported yet.

    Args:
        dataset: a `tf.data.Dataset` of `(features, labels, masks)`.
        preprocessor: a `TextPreprocessor`; `pair=True` iff the features
            have a `"text_pair"`.
        batch_size: examples per batch.
        bucket_boundaries: the padded lengths, see `bucket_lengths`.
        shuffle_buffer: if set, shuffle raw examples with this buffer size.
        seed: seed of that shuffle and of the batch order within chunks.
        drop_remainder: drop a final partial batch.
        pad_to_fixed_length: pad every batch to `sequence_length` and keep
            the stream's order (no sorting), e.g. as a benchmark baseline.
        keep_order: batch the stream in order (each batch is `batch_size`
            consecutive examples, as a stratified schedule laid them out),
            each padded to the bucket of its longest example.

    Example:
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat"]
    >>> raw = tf.data.Dataset.from_tensor_slices(
    ...     ({"text": ["the cat", "the cat sat"]}, {"topic": [0, 1]},
    ...      {"topic": [1.0, 1.0]}))
    >>> batches = make_batches(raw, TextPreprocessor(vocab, 32), batch_size=8)
    >>> x, y, sample_weight = next(iter(batches))
    >>> tuple(x["token_ids"].shape)
    (2, 16)
    """
    _check_element_spec(dataset.element_spec, preprocessor)
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    sequence_length = preprocessor.sequence_length

    def encode(features, labels, masks):
        segments = [features["text"]]
        if preprocessor.pair:
            segments.append(features["text_pair"])
        x = preprocessor(*segments)
        lengths = tf.reduce_sum(tf.cast(x["padding_mask"], "int32"), axis=-1)
        return x, lengths, labels, masks

    if pad_to_fixed_length:
        batches = dataset.batch(batch_size, drop_remainder=drop_remainder).map(
            lambda *example: _drop_lengths(*encode(*example)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return batches.prefetch(tf.data.AUTOTUNE)

    buckets = tf.constant(bucket_lengths(sequence_length, bucket_boundaries), "int32")
    if keep_order:

        def trimmed(x, lengths, labels, masks):
            longest = tf.reduce_max(lengths)
            padded = tf.gather(buckets, tf.searchsorted(buckets, [longest])[0])
            return {k: v[:, :padded] for k, v in x.items()}, labels, masks

        batches = dataset.batch(batch_size, drop_remainder=drop_remainder).map(
            lambda *example: trimmed(*encode(*example)), num_parallel_calls=tf.data.AUTOTUNE
        )
        return batches.prefetch(tf.data.AUTOTUNE)
    # A Python int, or a tensor when the batches are built inside `flat_map`.
    batch_seed = tf.cast(0 if seed is None else seed, "int64")

    def split_by_bucket(chunk_index, chunk):
        x, lengths, labels, masks = chunk
        # Group by bucket, keeping the stream's order within a bucket.
        order = tf.argsort(tf.searchsorted(buckets, lengths), stable=True)
        x, lengths, labels, masks = tf.nest.map_structure(
            lambda t: tf.gather(t, order), (x, lengths, labels, masks)
        )
        size = tf.shape(lengths)[0]
        starts = tf.range(0, size, batch_size)
        starts = tf.random.experimental.stateless_shuffle(
            starts, seed=tf.stack([batch_seed, chunk_index])
        )

        def one_batch(start):
            stop = tf.minimum(start + batch_size, size)
            longest = tf.reduce_max(lengths[start:stop])
            padded = tf.gather(buckets, tf.searchsorted(buckets, [longest])[0])
            batch_x = {k: v[start:stop, :padded] for k, v in x.items()}
            rows = tf.nest.map_structure(lambda t: t[start:stop], (labels, masks))
            return (batch_x,) + rows

        return tf.data.Dataset.from_tensor_slices(starts).map(one_batch)

    batches = (
        dataset.batch(batch_size * _BATCHES_PER_CHUNK)
        .map(encode, num_parallel_calls=tf.data.AUTOTUNE)
        .enumerate()
        .flat_map(split_by_bucket)
    )
    if drop_remainder:
        batches = batches.filter(
            lambda x, y, w: tf.shape(x["token_ids"])[0] == batch_size
        )
    # Every chunk but the last holds whole batches, so a stream of N examples
    # gives ceil(N / B) batches; saying so lets `fit` show and check the count.
    examples = tf.get_static_value(dataset.cardinality())  # None inside `flat_map`
    if examples is not None and examples >= 0:
        count = examples // batch_size if drop_remainder else math.ceil(examples / batch_size)
        batches = batches.apply(tf.data.experimental.assert_cardinality(count))
    return batches.prefetch(tf.data.AUTOTUNE)


def _drop_lengths(x, lengths, labels, masks):
    return x, labels, masks


def _check_element_spec(spec, preprocessor):
    if not (isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[0], dict)):
        raise ValueError(
            "make_batches expects a dataset of (features, labels, masks) "
            f"with features a dict of strings, got elements {spec}."
        )
    features, labels, _ = spec
    if "text" not in features:
        raise ValueError(f"The features have no 'text': {sorted(features)}.")
    if ("text_pair" in features) != preprocessor.pair:
        raise ValueError(
            f"The features {sorted(features)} do not match a preprocessor "
            f"with pair={preprocessor.pair}."
        )
    for task, label in labels.items():
        if label.dtype.is_integer and label.shape.rank:
            raise NotImplementedError(
                f"Task {task!r} has per-word integer labels (tagging); "
                "make_batches does not align them to word pieces yet."
            )
