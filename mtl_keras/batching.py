"""Batching: raw examples to `(x, y, sample_weight)` batches, grouped by length."""

import logging
import math
import weakref

import tensorflow as tf

from mtl_keras import words


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

# The functions given to tf.data here are plain graph code, with no Python
# control flow on tensors: converting them with AutoGraph, which tf.data
# does by default, only cost time (3 s of the default run's tracing).
no_autograph = tf.autograph.experimental.do_not_convert


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
    are moved to each word's label piece (`mtl_keras.words.token_labels`):
    in the batches they are int32 `[B, L]` with a `[B, L]` mask, cut to the
    batch's length like the ids; this needs an `align_words` preprocessor.

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
    >>> from mtl_keras.preprocess import TextPreprocessor
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat"]
    >>> raw = tf.data.Dataset.from_tensor_slices(
    ...     ({"text": ["the cat", "the cat sat"]}, {"topic": [0, 1]},
    ...      {"topic": [1.0, 1.0]}))
    >>> batches = make_batches(raw, TextPreprocessor(vocab, 32), batch_size=8)
    >>> x, y, sample_weight = next(iter(batches))
    >>> tuple(x["token_ids"].shape)
    (2, 16)
    """
    token_tasks = _check_element_spec(dataset.element_spec, preprocessor)
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    sequence_length = preprocessor.sequence_length

    @no_autograph
    def encode(features, labels, masks):
        segments = [features["text"]]
        if preprocessor.pair:
            segments.append(features["text_pair"])
        x = dict(_traced(preprocessor)(*segments))
        word_ids = x.pop("word_ids", None)
        labels, masks = dict(labels), dict(masks)
        for name in token_tasks:
            labels[name], masks[name] = words.token_labels(
                labels[name], word_ids, masks[name], preprocessor.label_piece
            )
        lengths = tf.reduce_sum(tf.cast(x["padding_mask"], "int32"), axis=-1)
        return x, lengths, labels, masks

    def cut(rows, padded):  # per-token labels and masks, cut like the ids
        labels, masks = rows
        return tuple(
            {k: v[:, :padded] if k in token_tasks else v for k, v in part.items()}
            for part in (labels, masks)
        )

    def batch(ds, size, drop_remainder=False):  # per-word labels vary in length
        if token_tasks:
            return ds.ragged_batch(size, drop_remainder=drop_remainder)
        return ds.batch(size, drop_remainder=drop_remainder)

    if pad_to_fixed_length:
        batches = batch(dataset, batch_size, drop_remainder).map(
            no_autograph(lambda *example: _drop_lengths(*encode(*example))),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return batches.prefetch(tf.data.AUTOTUNE)

    buckets = tf.constant(bucket_lengths(sequence_length, bucket_boundaries), "int32")
    if keep_order:

        def trimmed(x, lengths, labels, masks):
            longest = tf.reduce_max(lengths)
            padded = tf.gather(buckets, tf.searchsorted(buckets, [longest])[0])
            return ({k: v[:, :padded] for k, v in x.items()},) + cut((labels, masks), padded)

        batches = batch(dataset, batch_size, drop_remainder).map(
            no_autograph(lambda *example: trimmed(*encode(*example))),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return batches.prefetch(tf.data.AUTOTUNE)
    # A Python int, or a tensor when the batches are built inside `flat_map`.
    batch_seed = tf.cast(0 if seed is None else seed, "int64")

    @no_autograph
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

        @no_autograph
        def one_batch(start):
            stop = tf.minimum(start + batch_size, size)
            longest = tf.reduce_max(lengths[start:stop])
            padded = tf.gather(buckets, tf.searchsorted(buckets, [longest])[0])
            batch_x = {k: v[start:stop, :padded] for k, v in x.items()}
            rows = tf.nest.map_structure(lambda t: t[start:stop], (labels, masks))
            return (batch_x,) + cut(rows, padded)

        return tf.data.Dataset.from_tensor_slices(starts).map(one_batch)

    batches = (
        batch(dataset, batch_size * _BATCHES_PER_CHUNK)
        .map(encode, num_parallel_calls=tf.data.AUTOTUNE)
        .enumerate()
        .flat_map(split_by_bucket)
    )
    if drop_remainder:
        batches = batches.filter(
            no_autograph(lambda x, y, w: tf.shape(x["token_ids"])[0] == batch_size)
        )
    # Every chunk but the last holds whole batches, so a stream of N examples
    # gives ceil(N / B) batches; saying so lets `fit` show and check the count.
    examples = tf.get_static_value(dataset.cardinality())  # None inside `flat_map`
    if examples is not None and examples >= 0:
        count = examples // batch_size if drop_remainder else math.ceil(examples / batch_size)
        batches = batches.apply(tf.data.experimental.assert_cardinality(count))
    return batches.prefetch(tf.data.AUTOTUNE)


# A preprocessor's graph, traced once and called by every dataset built on it.
_TRACED = weakref.WeakKeyDictionary()


def _traced(preprocessor):
    """`preprocessor` as a `tf.function` shared by all the datasets built on it.

    tf.data traces a map function anew for every dataset, and tracing the
    tokenizer and word alignment costs about a second and a half on CPU; a
    run builds several datasets on one preprocessor (an epoch's batches,
    the dev batches, the evaluation). Called from the map function, the
    traced graph is reused (one trace per input signature).
    """
    function = _TRACED.get(preprocessor)
    if function is None:
        function = _TRACED[preprocessor] = tf.function(
            preprocessor.__call__, reduce_retracing=True, autograph=False  # as the SavedModel's
        )
    return function


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
    token_tasks = [t for t, label in labels.items() if label.dtype.is_integer and label.shape.rank]
    if token_tasks and not preprocessor.align_words:
        raise ValueError(
            f"Task {token_tasks[0]!r} has per-word labels (tagging), so the "
            "preprocessor must align words: TextPreprocessor(..., align_words=True)."
        )
    return token_tasks


def report_cut_words(preprocessor, texts, split="training"):
    """Logs and returns how many words truncation cuts from `texts` (tagging).

    Those words get no tag in training; at serving their tag is None.

    Example:
    >>> from mtl_keras.preprocess import TextPreprocessor
    >>> preprocessor = TextPreprocessor(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], 4,
    ...                                 align_words=True)
    >>> report_cut_words(preprocessor, ["a b c", "d"])
    1
    """
    if not preprocessor.align_words:
        return 0
    cut = rows = 0
    for batch in tf.data.Dataset.from_tensor_slices(list(texts)).batch(1024):
        counts = preprocessor.word_alignment(batch)[1]["cut_words"]
        cut, rows = cut + int(tf.reduce_sum(counts)), rows + int(tf.math.count_nonzero(counts))
    if cut:
        logging.getLogger("mtl_keras").warning(
            "%d %s word(s) in %d text(s) do not fit in sequence_length %d and get "
            "no tag (raise preprocessor.sequence_length to keep them).",
            cut, split, rows, preprocessor.sequence_length,
        )  # fmt: skip
    return cut
