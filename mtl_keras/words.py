"""Words: the rule that splits a text into words, and word-piece alignment.

Tagging tasks label *words*; the encoder sees *word pieces*. This module is
the one home of both halves of the bridge:

* **The word rule.** A text is split on runs of whitespace, where
  whitespace is exactly what Python's `str.isspace` accepts (`text.split()`).
  Readers of pre-tokenized data (CoNLL, CoNLL-U, JSONL token lists) join the
  tokens with single spaces, so splitting gives the tokens back; a plain
  string at serving time is split by the same rule (`"don't stop."` is two
  words: give tokenized text to get one tag per token as in training).
* **Alignment** (`align_word_pieces`). Each word is tokenized on its own; a
  word that gives no piece (only control or format characters) becomes one
  `[UNK]`, so every word has a first piece. Each word's label goes to one
  piece, its *label piece*: the first (the keras-io BERT NER convention, the
  default) or the last (`label_piece="last"`: English marks part of speech
  with suffixes, `##ly`, `##ing`, `##s`, which a rare word's last piece
  holds); the other pieces, `[CLS]`, `[SEP]` and padding are masked. Truncation keeps whole words: a text is cut
  after the last word whose pieces fit in `sequence_length - 2`; only a first
  word longer than that is cut inside (it keeps its first pieces and label).
  The words cut are counted (`cut_words`) and reported before training.

The same TensorFlow code runs in `tf.data`, in the `.keras` model and in
the SavedModel, so the ids are identical everywhere.
"""

import re
import sys

import tensorflow as tf

# Every character Python's `str.split()` splits on (29 code points); the
# graph uses the same set, so Python and TensorFlow count the same words.
WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
_CLASS = "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE)
WHITESPACE_PATTERN = f"[{_CLASS}]+"  # RE2 syntax
IGNORE = -1  # word id of [CLS], [SEP], padding and non-word pieces
LABEL_PIECES = ("first", "last")  # which piece of a word carries its label


def split_words(text):
    """The words of a text, by the word rule (`text.split()`).

    Example:
    >>> split_words("Empire  State\\u00a0Building .")
    ['Empire', 'State', 'Building', '.']
    """
    return text.split()


def join_words(tokens):
    """One text of pre-tokenized words (single spaces), checked.

    Raises ValueError naming the first token that is empty or contains
    whitespace (it would not come back as one word).

    Example:
    >>> join_words(["New", "York", "!"])
    'New York !'
    >>> join_words(["New York"])
    Traceback (most recent call last):
    ...
    ValueError: token 0 'New York' contains whitespace
    """
    for i, token in enumerate(tokens):
        if not isinstance(token, str):
            raise ValueError(f"token {i} {token!r} is not a string")
        if not token:
            raise ValueError(f"token {i} is empty")
        if re.search(f"[{re.escape(WHITESPACE)}]", token):
            raise ValueError(f"token {i} {token!r} contains whitespace")
    return " ".join(tokens)


def split_words_with_offsets(text):
    """`(words, starts, ends)`: ragged `[B, W]` words and their byte offsets.

    Example:
    >>> words, starts, ends = split_words_with_offsets(tf.constant(["a  bc"]))
    >>> words.to_list(), starts.to_list(), ends.to_list()
    ([[b'a', b'bc']], [[0, 3]], [[1, 5]])
    """
    import tensorflow_text  # noqa: F401 (regex_split is one of its ops)

    words, starts, ends = tensorflow_text.regex_split_with_offsets(
        text, WHITESPACE_PATTERN
    )
    return words, starts, ends


def align_word_pieces(tokenize, words, budget, unk_id):
    """Word pieces of ragged `words` `[B, W]`, whole-word truncated.

    Args:
        tokenize: maps ragged strings `[B, W]` to ragged ids `[B, W, P]`.
        words: ragged strings `[B, W]`.
        budget: the most pieces a row may keep.
        unk_id: the id given to a word that has no piece.

    Returns:
        `(piece_ids, word_ids, cut_words)`: ragged `[B, T]` ids, ragged
        `[B, T]` word index of each piece (IGNORE for none), and `[B]` int32
        counts of the words cut by truncation.

    Example:
    >>> table = {b"new": [7], b"yorker": [8, 9], b"!": [5]}
    >>> tokenize = lambda w: tf.ragged.constant([[table[t] for t in row]
    ...                                          for row in w.to_list()])
    >>> ids, word_ids, cut = align_word_pieces(
    ...     tokenize, tf.ragged.constant([[b"new", b"yorker", b"!"]]), 3, 1)
    >>> ids.to_list(), word_ids.to_list(), cut.numpy().tolist()
    ([[7, 8, 9]], [[0, 1, 1]], [1])
    """
    pieces = tokenize(words)  # [B, W, P]
    inner = pieces.values  # [all words, P]
    lengths = inner.row_lengths()
    empty = tf.cast(tf.equal(lengths, 0), "int64")
    # `validate=False` here and below: the lengths are computed to fit, and
    # each validation adds assertion ops costing ~40 ms of tracing.
    unk = tf.RaggedTensor.from_row_lengths(
        tf.fill([tf.reduce_sum(empty)], tf.cast(unk_id, inner.dtype)), empty, validate=False
    )
    inner = tf.concat([inner, unk], axis=1)
    lengths = inner.row_lengths()

    # Whole words while they fit: the running piece count within each row.
    row_of_word = words.value_rowids()
    first_word = words.row_starts()
    running = tf.cumsum(lengths)
    before_row = tf.gather(tf.concat([[0], running], 0), first_word)
    within_row = running - tf.gather(before_row, row_of_word)
    index_in_row = tf.range(tf.shape(lengths, out_type="int64")[0]) - tf.gather(
        first_word, row_of_word
    )
    keep = (within_row <= budget) | tf.equal(index_in_row, 0)
    kept_lengths = tf.where(keep, lengths, 0)
    kept = tf.ragged.boolean_mask(inner, keep).flat_values  # the kept words' pieces
    word_index = tf.repeat(index_in_row, kept_lengths)
    pieces_per_row = tf.math.unsorted_segment_sum(
        kept_lengths, row_of_word, words.nrows()
    )
    ids = tf.RaggedTensor.from_row_lengths(kept, pieces_per_row, validate=False)
    word_ids = tf.RaggedTensor.from_row_lengths(word_index, pieces_per_row, validate=False)
    # Only an over-long first word is cut inside.
    ids, word_ids = ids[:, :budget], word_ids[:, :budget]
    kept_words = tf.math.unsorted_segment_sum(
        tf.cast(keep, "int32"), row_of_word, words.nrows()
    )
    cut = tf.cast(words.row_lengths(), "int32") - kept_words
    return ids, tf.cast(word_ids, "int32"), cut


def packed_word_ids(word_ids, sequence_length):
    """Ragged `[B, T]` word ids (`T <= sequence_length - 2`) laid out like
    their packed pieces: dense `[B, sequence_length]`, IGNORE at `[CLS]`,
    `[SEP]` and the padding.

    Two ops instead of a second `MultiSegmentPacker`, whose ragged concat
    cost 0.7 s of graph building in each trace of the preprocessor.

    Example:
    >>> packed_word_ids(tf.ragged.constant([[0, 0, 1], []]), 6).numpy().tolist()
    [[-1, 0, 0, 1, -1, -1], [-1, -1, -1, -1, -1, -1]]
    """
    body = word_ids.to_tensor(default_value=IGNORE, shape=[None, sequence_length - 1])
    return tf.pad(body, [[0, 0], [1, 0]], constant_values=IGNORE)


def first_pieces(word_ids):
    """Bool `[B, L]`: the positions holding the first piece of a word.

    Example:
    >>> first_pieces(tf.constant([[-1, 0, 1, 1, 2, -1]])).numpy().astype(int).tolist()
    [[0, 1, 1, 0, 1, 0]]
    """
    previous = tf.pad(word_ids[:, :-1], [[0, 0], [1, 0]], constant_values=IGNORE)
    return (word_ids >= 0) & tf.not_equal(word_ids, previous)


def last_pieces(word_ids):
    """Bool `[B, L]`: the positions holding the last piece of a word.

    Example:
    >>> last_pieces(tf.constant([[-1, 0, 1, 1, 2, -1]])).numpy().astype(int).tolist()
    [[0, 1, 0, 1, 1, 0]]
    """
    following = tf.pad(word_ids[:, 1:], [[0, 0], [0, 1]], constant_values=IGNORE)
    return (word_ids >= 0) & tf.not_equal(word_ids, following)


def label_pieces(word_ids, label_piece="first"):
    """Bool `[B, L]`: the piece of each word that carries its label.

    Example:
    >>> label_pieces(tf.constant([[-1, 0, 0, -1]]), "last").numpy().astype(int).tolist()
    [[0, 0, 1, 0]]
    """
    check_label_piece(label_piece)
    return (first_pieces if label_piece == "first" else last_pieces)(word_ids)


def check_label_piece(label_piece):
    """Raises ValueError unless `label_piece` is one of `LABEL_PIECES`.

    Example:
    >>> check_label_piece("middle")
    Traceback (most recent call last):
    ...
    ValueError: label_piece must be one of ('first', 'last'), got 'middle'.
    """
    if label_piece not in LABEL_PIECES:
        raise ValueError(f"label_piece must be one of {LABEL_PIECES}, got {label_piece!r}.")


def token_labels(word_labels, word_ids, row_mask, label_piece="first"):
    """Word labels moved to their label pieces: `(labels [B, L], mask [B, L])`.

    Args:
        word_labels: ragged (or dense) int `[B, W]`, one label per word.
        word_ids: int `[B, L]` from the preprocessor.
        row_mask: float `[B]`, 1.0 where the row carries the task's labels.
        label_piece: `"first"` or `"last"` (see the module docstring).

    Example:
    >>> labels, mask = token_labels(tf.ragged.constant([[4, 5]]),
    ...                             tf.constant([[-1, 0, 0, 1, -1]]), tf.constant([1.0]))
    >>> labels.numpy().tolist(), mask.numpy().tolist()
    ([[0, 4, 0, 5, 0]], [[0.0, 1.0, 0.0, 1.0, 0.0]])
    >>> token_labels(tf.ragged.constant([[4, 5]]), tf.constant([[-1, 0, 0, 1, -1]]),
    ...              tf.constant([1.0]), "last")[0].numpy().tolist()
    [[0, 0, 4, 5, 0]]
    """
    if isinstance(word_labels, tf.RaggedTensor):
        word_labels = word_labels.to_tensor()
    word_labels = tf.pad(word_labels, [[0, 0], [0, 1]])  # at least one column
    labelled = label_pieces(word_ids, label_piece)
    index = tf.clip_by_value(word_ids, 0, tf.shape(word_labels)[1] - 1)
    labels = tf.where(labelled, tf.gather(word_labels, index, batch_dims=1), 0)
    mask = tf.cast(labelled, "float32") * tf.cast(row_mask, "float32")[:, None]
    return tf.cast(labels, "int32"), mask
