"""Strings in, labels out: the serving half of `MultiTaskModel`.

`TextServing` is mixed into `MultiTaskModel`: it tokenizes raw strings with
the model's preprocessor (in the graph, for the SavedModel), computes each
kind's serving outputs, and formats them as label names for clients.

The served functions check their inputs in the graph (`tf.debugging`
asserts, which hold in a loaded SavedModel and in TF Serving): a wrong rank,
a too-long input, an id outside the vocabulary or a mask of another shape
fail with an `InvalidArgumentError` that names the input and the limit.
Their signatures leave the rank open (`TensorSpec(None)`), since a declared
rank lets TensorFlow fold such a check away without enforcing it.
"""

import weakref

import tensorflow as tf

from mtl_keras import words
from mtl_keras.kinds import format_rows
from mtl_keras.preprocess import MODEL_INPUTS, to_bytes

_SERVE_TEXT = weakref.WeakKeyDictionary()  # model -> traced serve_text


class TextServing:
    """The string-serving methods of `MultiTaskModel` (a mixin).

    Example:
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> preprocessor = TextPreprocessor.from_texts(["good film"], 20, sequence_length=8)
    >>> encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8, num_layers=1)
    >>> model = MultiTaskModel([Task("liked", "binary")], encoder, preprocessor)
    >>> isinstance(model, TextServing), sorted(model.predict_labels(["good"])[0]["liked"])
    (True, ['label', 'probabilities'])
    """

    def predict_labels(self, texts, text_pairs=None, top_k=None, batch_size=64):
        """Label names and probabilities for raw strings, one dict per text.

        `{task: {"label": name, "probabilities": {name: p}}}`; multilabel
        labels are lists, regression tasks give `{"value": x}`, tagging
        tasks one label per word piece. `top_k` keeps only the K most likely
        classes. The outputs are those of the exported SavedModel
        (`serve_text`).
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("predict_labels takes a list of texts, not one string.")
        inputs = {"text": list(texts)}
        if text_pairs is not None:
            inputs["text_pair"] = list(text_pairs)
        rows = []
        serve = self.serve_text_function()
        for batch in self._text_batches(inputs, batch_size, preprocess=False):
            outputs = {k: v.numpy() for k, v in serve(*batch).items()}
            rows.extend(format_rows(self.tasks, outputs, top_k=top_k))
        return rows

    def serving_outputs(self, token_ids, padding_mask, alignment=None):
        """What the SavedModel serves for packed ids: each kind's outputs.

        With `alignment` (from `serve_text` of an `align_words`
        preprocessor) per-token tasks give one tag per word, and the
        outputs hold `words`, `num_words`, `word_start` / `word_end`
        (character offsets) and `cut_words` (dropped by truncation).
        """
        token_ids = tf.cast(token_ids, tf.int32)
        padding_mask = tf.cast(padding_mask, tf.bool)
        logits = self({"token_ids": token_ids, "padding_mask": padding_mask}, training=False)
        outputs = {"num_tokens": tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=1)}
        if alignment is not None:
            outputs.update(_word_outputs(alignment))
        for task in self.tasks:
            z = tf.cast(logits[task.name], tf.float32)
            kind = task.task_kind
            if alignment is not None and task.per_token:
                outputs.update(kind.word_outputs(task, z, alignment))
            else:
                outputs.update(kind.serving_outputs(task, z, padding_mask))
        return outputs

    def serve_token_ids(self, token_ids, padding_mask):
        """What the SavedModel serves for packed ids, once they are checked:
        both `[batch, length]`, `length <= sequence_length`, the ids in
        `[0, vocabulary_size)` (those of the preprocessor)."""
        preprocessor = self._require_preprocessor()
        token_ids = _checked_rank(token_ids, "token_ids", 2)
        padding_mask = _checked_rank(padding_mask, "padding_mask", 2)
        capacity, vocabulary = preprocessor.sequence_length, preprocessor.vocabulary_size
        where = "serve_token_ids: "
        checks = [
            tf.debugging.assert_equal(
                tf.shape(padding_mask), tf.shape(token_ids),
                message=where + "padding_mask must have the shape of token_ids",
            ),
            tf.debugging.assert_less_equal(
                tf.shape(token_ids)[1], capacity,
                message=where + f"token_ids has more positions than sequence_length {capacity}",
            ),
            tf.debugging.assert_non_negative(
                token_ids, message=where + f"token_ids holds a negative id; ids are in [0, {vocabulary})",
            ),
            tf.debugging.assert_less(
                token_ids, vocabulary,
                message=where + f"token_ids holds an id >= the vocabulary size {vocabulary}",
            ),
        ]
        with tf.control_dependencies(checks):
            token_ids, padding_mask = tf.identity(token_ids), tf.identity(padding_mask)
        return self.serving_outputs(token_ids, padding_mask)

    def ids_signature(self):
        """The `tf.TensorSpec`s of `serve_token_ids`'s inputs (rank checked inside)."""
        return [
            tf.TensorSpec(None, tf.int32, name="token_ids"),
            tf.TensorSpec(None, tf.bool, name="padding_mask"),
        ]

    def serve_text(self, text, text_pair=None):
        """What the SavedModel serves for strings: tokenized in the graph."""
        preprocessor = self._require_preprocessor()
        text = _checked_rank(text, "text", 1)
        if text_pair is not None:
            text_pair = _checked_rank(text_pair, "text_pair", 1)
            same = tf.debugging.assert_equal(
                tf.shape(text_pair), tf.shape(text),
                message="serving_default: text_pair must hold one string per text",
            )
            with tf.control_dependencies([same]):
                text_pair = tf.identity(text_pair)
        alignment = None
        if preprocessor.align_words and any(task.per_token for task in self.tasks):
            x, alignment = preprocessor.word_alignment(text)
        else:
            x = preprocessor(*_segments(text, text_pair))
        # Cut the padding shared by the whole batch: the encoder takes any
        # length up to `sequence_length`, and short requests get cheaper.
        lengths = tf.reduce_sum(tf.cast(x["padding_mask"], tf.int32), axis=1)
        length = tf.reduce_max(tf.concat([lengths, [1]], axis=0))
        if alignment is not None:  # where each word's tag is read
            alignment["label_pieces"] = words.label_pieces(
                x["word_ids"][:, :length], preprocessor.label_piece
            )
        return self.serving_outputs(
            x["token_ids"][:, :length], x["padding_mask"][:, :length], alignment
        )

    def text_signature(self):
        """The `tf.TensorSpec`s of `serve_text`'s inputs: string `[batch]`
        (the rank is checked inside)."""
        spec = [tf.TensorSpec(None, tf.string, name="text")]
        if self._require_preprocessor().pair:
            spec.append(tf.TensorSpec(None, tf.string, name="text_pair"))
        return spec

    def serve_text_function(self):
        """`serve_text` traced once per model (kept outside the model, so
        that a SavedModel export does not pick it up)."""
        if self not in _SERVE_TEXT:
            _SERVE_TEXT[self] = tf.function(
                self.serve_text, input_signature=self.text_signature(), autograph=False
            )
        return _SERVE_TEXT[self]

    def _require_preprocessor(self):
        if self.preprocessor is None:
            raise ValueError(
                "This model has no preprocessor, so it takes token ids, not "
                "strings: build it with MultiTaskModel(tasks, encoder, preprocessor)."
            )
        return self.preprocessor

    def _text_batches(self, texts, batch_size, preprocess=True):
        preprocessor = self._require_preprocessor()
        columns = [texts["text"]] + ([texts["text_pair"]] if "text_pair" in texts else [])
        if len(columns) != (2 if preprocessor.pair else 1):
            wanted = "sentence pairs ({'text': [...], 'text_pair': [...]})"
            raise ValueError(f"This model takes {wanted if preprocessor.pair else 'single texts'}.")
        if len(set(map(len, columns))) > 1:
            raise ValueError("text and text_pair must have the same length.")
        tensors = tuple(
            tf.constant([to_bytes(t) for t in column], tf.string) for column in columns
        )
        dataset = tf.data.Dataset.from_tensor_slices(tensors).batch(batch_size)
        if preprocess:
            dataset = dataset.map(lambda *segments: _model_inputs(preprocessor(*segments)))
        return dataset


def _checked_rank(tensor, name, rank):
    """`tensor` once a graph assert has checked its rank, with that static rank."""
    shape = "[batch]" if rank == 1 else "[batch, length]"
    check = tf.debugging.assert_equal(
        tf.rank(tensor), rank,
        message=f"{name} must be a rank-{rank} tensor {shape}",
    )
    with tf.control_dependencies([check]):
        # A reshape to its own shape, after the check: gives the model a
        # static rank without an op TensorFlow could run before the check.
        checked = tf.reshape(tensor, tf.shape(tensor)[:rank])
    checked.set_shape([None] * rank)
    return checked


def _segments(text, text_pair):
    return (text,) if text_pair is None else (text, text_pair)


def _model_inputs(x):
    return {k: v for k, v in x.items() if k in MODEL_INPUTS}


def _word_outputs(alignment):
    text, words = alignment["text"], alignment["words"]

    def characters(offsets):  # byte offsets in the UTF-8 text -> characters
        repeated = tf.gather(text, offsets.value_rowids())
        prefix = tf.strings.substr(repeated, tf.zeros_like(offsets.values), offsets.values)
        count = tf.strings.length(prefix, unit="UTF8_CHAR")
        return offsets.with_values(tf.cast(count, tf.int32)).to_tensor(-1)

    return {
        "words": words.to_tensor(""),
        "num_words": tf.cast(words.row_lengths(), tf.int32),
        "word_start": characters(alignment["starts"]),
        "word_end": characters(alignment["ends"]),
        "cut_words": alignment["cut_words"],
    }
