"""The `tagging` kind: one of C tags per word: C logits per token, softmax cross-entropy.

Labels are one tag per word (`mtl_keras.words`); in batches they sit on
each word's label piece (the first by default), and the metrics count words. For an entity tag set
(IOB1, IOB2, BIOES: `mtl_keras.entities`) entity-level F1 is the headline
metric; otherwise token (word) accuracy.
"""

import numpy as np
import tensorflow as tf

from mtl_keras import entities
from mtl_keras.kinds.base import (
    as_list,
    parse_class,
    top_probabilities,
)
from mtl_keras.kinds.multiclass import Multiclass
from mtl_keras.metrics import TokenAccuracy


class Tagging(Multiclass):
    """One of C tags per word: C logits per token, softmax cross-entropy.

    Example:
    >>> from mtl_keras import Task
    >>> task = Task("pos", "tagging", 2, label_names=("NOUN", "VERB"))
    >>> task.task_kind.parse(task, "NOUN VERB", None, num_words=2).tolist()
    [0, 1]
    >>> ner = Task("ner", "tagging", 3, label_names=("O", "B-PER", "I-PER"))
    >>> task.headline_metric, ner.headline_metric
    ('token_accuracy', 'entity_f1')
    """

    name = "tagging"
    per_token = True
    headline_metric = "token_accuracy"

    def scheme(self, task):
        """`entities.tag_scheme` of the task's tags (None: not an entity tag set)."""
        return entities.tag_scheme(list(task.classes))

    def headline(self, task):
        return "entity_f1" if self.scheme(task) else "token_accuracy"

    def headline_in(self, metrics):
        return "entity_f1" if "entity_f1" in metrics else "token_accuracy"

    def metrics(self, task):
        found = {}
        if self.scheme(task):
            found["entity_f1"] = entities.EntityF1(task.classes, name=f"{task.name}_entity_f1")
        name = task.name + "_token_accuracy"
        found["token_accuracy"] = TokenAccuracy(name=name)  # each word once, any padding
        return found

    def metric_inputs(self, task, labels, logits):
        return labels, logits  # [B, L] and [B, L, C]: entities need the rows

    def evaluation_rows(self, labels, logits, mask):
        labelled = mask > 0  # one row per word: its label piece
        return labels[labelled], logits[labelled]

    def evaluation_details(self, task, model):
        if not self.scheme(task):
            return {}
        found = model.get_metric(f"{task.name}_entity_f1").values()  # after `evaluate`
        return {
            "entity_precision": found["overall"]["precision"],
            "entity_recall": found["overall"]["recall"],
            "per_type": {k: v for k, v in found.items() if k != "overall"},
        }

    def parse(self, task, value, label_map, num_words):
        items = value.split() if isinstance(value, str) else as_list(value)
        if len(items) != num_words:
            raise ValueError(f"{len(items)} tags for {num_words} words")
        tags = []
        for i, item in enumerate(items):
            try:
                tags.append(parse_class(task.classes, item, label_map))
            except ValueError as error:
                raise ValueError(f"word {i + 1} of {num_words}, tag {item!r}: {error}") from None
        return np.array(tags, "int32")

    def placeholder(self, task, num_words):
        return np.zeros(num_words, "int32")

    def strata(self, task, labels, masks):
        return None  # a tag per word: no single class per row

    def label_array(self, task, values):
        array = np.empty(len(values), object)
        array[:] = [np.asarray(v, "int32") for v in values]
        return array

    def label_tensor(self, column):
        lengths = np.asarray([len(v) for v in column], "int64")
        flat = np.concatenate(list(column)) if len(column) else np.zeros(0)
        return tf.RaggedTensor.from_row_lengths(np.asarray(flat, "int32"), lengths)

    def serving_outputs(self, task, logits, padding_mask):
        outputs = super().serving_outputs(task, logits, padding_mask)  # per token
        label = outputs[f"{task.name}_label"]
        outputs[f"{task.name}_label"] = tf.where(padding_mask, label, "")
        return outputs

    def output_names(self, task):
        names = [f"{task.name}_probabilities", f"{task.name}_label"]
        if self.scheme(task):
            names += [f"{task.name}_entity_{k}" for k in ("type", "start", "end", "text")]
        return names

    def word_outputs(self, task, logits, alignment):
        """Per-word serving outputs (`[B, W]`) of the string signature.

        `<task>_label` is one tag per word ("" for a word cut by truncation
        and for padding), `<task>_probabilities` `[B, W, C]`; for entity tag
        sets `<task>_entity_{type,start,end,text}` `[B, K]`: the spans, with
        character offsets into the text ("" / -1 pad).
        """
        labelled = alignment["label_pieces"]  # one piece per word kept
        width = tf.cast(alignment["words"].bounding_shape()[1], "int32")
        p = tf.nn.softmax(logits, axis=-1)
        p = tf.ragged.boolean_mask(p, labelled).to_tensor(
            shape=tf.stack([tf.shape(p)[0], width, task.num_classes])
        )
        tagged = tf.ragged.boolean_mask(labelled, labelled).to_tensor(
            False, shape=tf.stack([tf.shape(p)[0], width])
        )
        index = tf.argmax(p, axis=-1, output_type=tf.int32)
        names = tf.constant(task.classes, tf.string)
        outputs = {
            f"{task.name}_probabilities": p,
            f"{task.name}_label": tf.where(tagged, tf.gather(names, index), ""),
        }
        scheme = self.scheme(task)
        if scheme:
            outputs.update(_entity_outputs(task, index, tagged, scheme, alignment))
        return outputs

    def format(self, task, outputs, row, top_k=None):
        if "words" not in outputs:  # the token-ids signature: one tag per token
            length = int(outputs["num_tokens"][row])
            p = outputs[f"{task.name}_probabilities"][row][:length]
            labels = outputs[f"{task.name}_label"][row][:length]
            return {
                "label": [t.decode() for t in labels],
                "probabilities": [top_probabilities(task.classes, q, top_k) for q in p],
            }
        count = int(outputs["num_words"][row])
        labels = [t.decode() or None for t in outputs[f"{task.name}_label"][row][:count]]
        found = {"words": [w.decode() for w in outputs["words"][row][:count]], "label": labels}
        if top_k is not None:
            p = outputs[f"{task.name}_probabilities"][row][:count]
            found["probabilities"] = [
                top_probabilities(task.classes, q, top_k) if label else None
                for q, label in zip(p, labels)
            ]
        if f"{task.name}_entity_type" in outputs:
            found["entities"] = [
                {"text": text.decode(), "type": kind.decode(), "start": int(start), "end": int(end)}
                for kind, start, end, text in zip(
                    *(outputs[f"{task.name}_entity_{k}"][row] for k in ("type", "start", "end", "text"))
                )
                if kind
            ]
        return found

    def plot(self, task, labels, outputs):
        """A tag confusion matrix of the dev words (labels `[N]`, logits `[N, C]`)."""
        labels = np.asarray(labels)
        if labels.dtype == object or outputs is None:  # raw per-word label lists
            return None
        return super().plot(task, labels, outputs)


def _entity_outputs(task, index, tagged, scheme, alignment):
    prefixes, types, type_names = scheme
    rows = tf.cast(tf.where(tagged)[:, 0], "int32")
    first, last, kind = entities.spans(tf.boolean_mask(index, tagged), rows, prefixes, types)
    # Flat word positions -> (row, word); byte offsets -> character offsets.
    position = tf.cast(tf.where(tagged), "int32")
    row = tf.gather(position[:, 0], first)
    starts = tf.gather_nd(alignment["starts"].to_tensor(), tf.gather(position, first))
    ends = tf.gather_nd(alignment["ends"].to_tensor(), tf.gather(position, last))
    text = tf.gather(alignment["text"], row)
    zero = tf.zeros_like(starts)
    char_start = tf.strings.length(tf.strings.substr(text, zero, starts), unit="UTF8_CHAR")
    char_end = tf.strings.length(tf.strings.substr(text, zero, ends), unit="UTF8_CHAR")
    span_text = tf.strings.substr(text, starts, ends - starts)
    count = tf.shape(tagged, out_type="int64")[0]

    def per_row(values, fill):
        # `row` is sorted (`tf.where` is row-major), so no validation ops,
        # which cost a quarter of a second of tracing each.
        ragged = tf.RaggedTensor.from_value_rowids(
            values, tf.cast(row, "int64"), nrows=count, validate=False
        )
        return ragged.to_tensor(fill)

    name = task.name
    return {
        f"{name}_entity_type": per_row(tf.gather(tf.constant(type_names), kind), ""),
        f"{name}_entity_start": per_row(tf.cast(char_start, "int32"), -1),
        f"{name}_entity_end": per_row(tf.cast(char_end, "int32"), -1),
        f"{name}_entity_text": per_row(span_text, ""),
    }
