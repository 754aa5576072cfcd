"""Entities from tag sequences: tag schemes, spans in the graph, entity-level F1.

A tag set is an *entity* tag set when every tag is `O` or `<prefix>-<type>`
with prefix `B`, `I`, `E` or `S` (IOB1, IOB2 and BIOES; `L`/`U` are read as
`E`/`S`). Spans follow the CoNLL evaluation script (`conlleval`), which is
lenient: an entity starts at `B`/`S`, or at any tag after `O`, after an
`E`/`S`, or after a tag of another type (so `I-PER` after `O` starts one);
it ends where the next tag does not continue it. Precision, recall and F1
count exact matches of (first word, last word, type).

Keras has no span metric, so `EntityF1` computes the spans with
vectorized TensorFlow ops (no Python loop, works under `tf.distribute`).
"""

import keras
import tensorflow as tf

O, B, I, E, S = 0, 1, 2, 3, 4  # noqa: E741 (tag prefixes, by code)
_PREFIXES = {"B": B, "I": I, "E": E, "S": S, "L": E, "U": S}


def tag_scheme(classes):
    """`(prefix codes, type index per tag, type names)`, or None for other tag sets.

    Example:
    >>> tag_scheme(["O", "B-PER", "I-PER", "B-LOC"])
    ([0, 1, 2, 1], [0, 0, 0, 1], ['PER', 'LOC'])
    >>> tag_scheme(["NOUN", "VERB"]) is None
    True
    """
    prefixes, types, names = [], [], []
    for tag in classes:
        if tag == "O":
            prefixes.append(O)
            types.append(0)
            continue
        head, dash, kind = tag.partition("-")
        if not dash or head not in _PREFIXES or not kind:
            return None
        if kind not in names:
            names.append(kind)
        prefixes.append(_PREFIXES[head])
        types.append(names.index(kind))
    if "O" not in classes or not names:
        return None
    return prefixes, types, names


def span_bounds(prefix, kind, row):
    """Bool `(starts, ends)` of the entities of a flat word sequence.

    Args:
        prefix: int `[N]` prefix codes (`O`, `B`, `I`, `E`, `S`).
        kind: int `[N]` entity types.
        row: int `[N]` sentence of each word (entities never cross rows).

    Example:
    >>> starts, ends = span_bounds(tf.constant([1, 2, 0, 2, 1]),
    ...                            tf.constant([0, 0, 0, 1, 1]), tf.constant([0] * 5))
    >>> starts.numpy().astype(int).tolist(), ends.numpy().astype(int).tolist()
    ([1, 0, 0, 1, 1], [0, 1, 0, 1, 1])
    """

    def shifted(t, fill, step):
        if step > 0:  # the previous word's value
            return tf.concat([tf.fill([1], tf.cast(fill, t.dtype)), t[:-1]], 0)
        return tf.concat([t[1:], tf.fill([1], tf.cast(fill, t.dtype))], 0)

    inside = tf.not_equal(prefix, O)
    new_row = tf.not_equal(row, shifted(row, -1, 1))
    last_in_row = tf.not_equal(row, shifted(row, -1, -1))
    prev = tf.where(new_row, O, shifted(prefix, O, 1))
    nxt = tf.where(last_in_row, O, shifted(prefix, O, -1))
    starts = inside & (
        tf.equal(prefix, B) | tf.equal(prefix, S) | tf.equal(prev, O)
        | tf.equal(prev, E) | tf.equal(prev, S)
        | tf.not_equal(kind, shifted(kind, -1, 1))
    )
    ends = inside & (
        tf.equal(prefix, E) | tf.equal(prefix, S) | tf.equal(nxt, O)
        | tf.equal(nxt, B) | tf.equal(nxt, S)
        | tf.not_equal(kind, shifted(kind, -1, -1))
    )
    return starts, ends


def spans(tags, row, prefixes, types):
    """`(first, last, type)` int tensors `[K]` of the entities in flat `tags` `[N]`.

    Example:
    >>> prefixes, types, _ = tag_scheme(["O", "B-PER", "I-PER", "B-LOC"])
    >>> first, last, kind = spans(tf.constant([1, 2, 0, 2, 3]), tf.constant([0] * 5),
    ...                           prefixes, types)
    >>> first.numpy().tolist(), last.numpy().tolist(), kind.numpy().tolist()
    ([0, 3, 4], [1, 3, 4], [0, 0, 1])
    """
    prefix = tf.gather(tf.constant(prefixes, "int32"), tags)
    kind = tf.gather(tf.constant(types, "int32"), tags)
    starts, ends = span_bounds(prefix, kind, row)
    first = tf.cast(tf.reshape(tf.where(starts), [-1]), "int32")
    last = tf.cast(tf.reshape(tf.where(ends), [-1]), "int32")  # the k-th start's end
    return first, last, tf.gather(kind, first)


@keras.saving.register_keras_serializable(package="mtl_keras")
class EntityF1(keras.metrics.Metric):
    """Entity-level precision, recall and F1 (micro over types), exact spans.

    Takes tag labels and logits per token, `[B, L]` and `[B, L, C]`, and a
    `[B, L]` weight that is 1 at each word's first piece (padding, other
    pieces and unlabelled rows are 0): the weighted positions of a row, in
    order, are its words. `result()` is F1; `values()` gives precision,
    recall and F1 overall and per type.

    Example:
    >>> classes = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    >>> f1 = EntityF1(classes)
    >>> truth = [[1, 2, 0, 3]]               # "Ann Lee in Rome": PER, LOC
    >>> logits = tf.one_hot([[1, 2, 0, 0]], 5)  # found PER, missed LOC
    >>> f1.update_state(truth, logits, sample_weight=[[1.0, 1.0, 1.0, 1.0]])
    >>> round(float(f1.result()), 4)
    0.6667
    >>> f1.values()["PER"]["f1"], f1.values()["LOC"]["recall"]
    (1.0, 0.0)
    """

    def __init__(self, classes, name="entity_f1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.classes = list(classes)
        scheme = tag_scheme(self.classes)
        if scheme is None:
            raise ValueError(f"{self.classes} is not an IOB/BIOES tag set.")
        self.prefixes, self.types, self.type_names = scheme
        size = (len(self.type_names),)
        self.correct = self.add_variable(size, "zeros", dtype="float32", name="correct")
        self.found = self.add_variable(size, "zeros", dtype="float32", name="found")
        self.expected = self.add_variable(size, "zeros", dtype="float32", name="expected")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(tf.convert_to_tensor(y_true), "int32")
        predicted = tf.argmax(tf.convert_to_tensor(y_pred), axis=-1, output_type="int32")
        if sample_weight is None:
            sample_weight = tf.ones_like(y_true, "float32")
        words = tf.convert_to_tensor(sample_weight) > 0
        row = tf.cast(tf.where(words)[:, 0], "int32")
        truth = spans(tf.boolean_mask(y_true, words), row, self.prefixes, self.types)
        guess = spans(tf.boolean_mask(predicted, words), row, self.prefixes, self.types)
        count = tf.shape(row)[0]
        # A found entity is correct when a true one has its first word, last
        # word and type: index the found ones by first word.
        last_at = tf.tensor_scatter_nd_update(
            tf.fill([count], -1), guess[0][:, None], guess[1]
        )
        kind_at = tf.tensor_scatter_nd_update(
            tf.fill([count], -1), guess[0][:, None], guess[2]
        )
        hit = tf.equal(tf.gather(last_at, truth[0]), truth[1]) & tf.equal(
            tf.gather(kind_at, truth[0]), truth[2]
        )
        size = len(self.type_names)

        def per_type(kinds, weights=None):
            weights = tf.ones_like(kinds, "float32") if weights is None else weights
            return tf.math.unsorted_segment_sum(weights, kinds, size)

        self.correct.assign_add(per_type(truth[2], tf.cast(hit, "float32")))
        self.found.assign_add(per_type(guess[2]))
        self.expected.assign_add(per_type(truth[2]))

    def _scores(self, correct, found, expected):
        precision = tf.math.divide_no_nan(correct, found)
        recall = tf.math.divide_no_nan(correct, expected)
        f1 = tf.math.divide_no_nan(2 * precision * recall, precision + recall)
        return precision, recall, f1

    def result(self):
        totals = [tf.reduce_sum(v) for v in (self.correct, self.found, self.expected)]
        return self._scores(*totals)[2]

    def values(self):
        """`{"overall" and each type: {"precision", "recall", "f1", "support"}}`."""
        import numpy as np

        counts = [np.asarray(v.numpy(), "float64") for v in (self.correct, self.found, self.expected)]
        rows = {"overall": [c.sum() for c in counts]}
        rows.update({name: [c[i] for c in counts] for i, name in enumerate(self.type_names)})
        out = {}
        for name, (correct, found, expected) in rows.items():
            precision = correct / found if found else 0.0
            recall = correct / expected if expected else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out[name] = {"precision": float(precision), "recall": float(recall),
                         "f1": float(f1), "support": int(expected)}  # fmt: skip
        return out

    def reset_state(self):
        for v in (self.correct, self.found, self.expected):
            v.assign(tf.zeros_like(v))

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}
