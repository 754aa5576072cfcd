"""Tokenization: the WordPiece vocabulary and `TextPreprocessor` (strings → ids)."""

import os

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from mtl_keras import _compat, words

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
RESERVED_TOKENS = (PAD, UNK, CLS, SEP, MASK)
MODEL_INPUTS = ("token_ids", "padding_mask")  # what the encoder takes
TRUNCATION_MODES = ("round_robin", "waterfall")
MIN_COUNT = 10  # `learn_vocabulary`'s default: rarer words get no token of their own
VOCABULARY_SIZE = 8000  # `TextPreprocessor.from_texts`'s default


def clean_text(text):
    """Replaces invalid UTF-8 bytes with U+FFFD (the text policy of this module).

    Example:
    >>> latin1 = bytes([99, 97, 102, 233])  # "café" in Latin-1: invalid UTF-8
    >>> clean_text(tf.constant(latin1)).numpy().decode() == "caf" + chr(0xFFFD)
    True
    """
    return tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")


def read_vocabulary(path):
    """The tokens of a vocabulary file (one per line, id = line number - 1), checked.

    The file must start with `"[PAD]"` (id 0) and contain `"[UNK]"`,
    `"[CLS]"` and `"[SEP]"`; no line may be empty, hold whitespace or repeat
    a token. Errors name the file and the line.

    Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "vocabulary.txt"
    >>> _ = path.write_text("[PAD]\\n[UNK]\\n[CLS]\\n[SEP]\\nthe\\nthe\\n")
    >>> try:
    ...     read_vocabulary(path)
    ... except ValueError as error:
    ...     print(str(error).split(", ", 1)[1])
    line 6: 'the' is already on line 5 (each token once).
    """
    path = str(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            tokens = [line.rstrip("\r\n") for line in f]
    except FileNotFoundError:
        raise ValueError(f"Vocabulary file {path} does not exist.") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"Vocabulary file {path} is not UTF-8 text ({error}).") from None
    seen = {}
    for number, token in enumerate(tokens, start=1):
        where = f"Vocabulary file {path}, line {number}"
        if not token.strip():
            raise ValueError(f"{where}: an empty line (one token per line, no blank lines).")
        if len(token.split()) != 1 or token != token.strip():
            raise ValueError(f"{where}: {token!r} holds whitespace (one token per line).")
        if token in seen:
            raise ValueError(
                f"{where}: {token!r} is already on line {seen[token]} (each token once)."
            )
        seen[token] = number
    if not tokens or tokens[0] != PAD:
        found = repr(tokens[0]) if tokens else "an empty file"
        raise ValueError(
            f"Vocabulary file {path}, line 1: the first token must be {PAD!r} (id 0), "
            f"found {found}."
        )
    missing = [t for t in (UNK, CLS, SEP) if t not in seen]
    if missing:
        raise ValueError(
            f"Vocabulary file {path} has no line {' or '.join(map(repr, missing))}: "
            f"the reserved tokens {', '.join(RESERVED_TOKENS[:4])} must be in it."
        )
    return tokens


def learn_vocabulary(
    texts, vocabulary_size, lowercase=True, reserved_tokens=RESERVED_TOKENS, min_count=MIN_COUNT
):
    """Learns a WordPiece vocabulary, with `"[PAD]"` as id 0.

    Args:
        texts: a list of strings or a `tf.data.Dataset` of strings (scalars
            or batches). Invalid UTF-8 is cleaned as in `TextPreprocessor`.
        vocabulary_size: the maximum number of tokens, reserved ones included.
        lowercase: must match the `TextPreprocessor` that uses the vocabulary.
        reserved_tokens: tokens put first, in order; must start with
            `"[PAD]"` and contain `"[UNK]"`, `"[CLS]"` and `"[SEP]"`.
        min_count: a word seen fewer times gets no token of its own (it is
            spelled with pieces); with the default 10, `vocabulary_size` is
            often a ceiling the vocabulary does not reach (a config's
            `preprocessor.min_count`; lower it for more tokens).

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
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}.")
    if spec.shape.rank == 0:
        # Batched, the learner's word count reads a few arrays instead of
        # one small tensor per text (1 s of 2.8 s for 2,000 texts); the
        # counts, so the vocabulary, are the same.
        texts = texts.batch(1024)
    return _compat.word_piece_vocabulary(
        texts.map(clean_text, num_parallel_calls=tf.data.AUTOTUNE),
        vocabulary_size, lowercase, reserved_tokens, min_count,
    )  # fmt: skip


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
        align_words: tokenize word by word (`mtl_keras.words`: whitespace
            words, whole-word truncation, an empty word becomes `[UNK]`) and
            also return `"word_ids"`, int32 `[B, L]`: the word index of each
            piece, -1 for `[CLS]`, `[SEP]` and padding. Needed by tagging
            tasks (set by the config when a task is per token); single
            texts only.
        label_piece: which piece of a word carries its tag, `"first"` or
            `"last"` (`mtl_keras.words`); only with `align_words`.

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
        align_words=False,
        label_piece="first",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_packing(sequence_length, pair, truncate)
        if align_words and pair:
            raise ValueError("align_words (tagging) takes single texts, not pairs.")
        words.check_label_piece(label_piece)
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
        self.align_words = bool(align_words)
        self.label_piece = label_piece
        # All state exists now; built layers can be tracked for export.
        self.build()

    @classmethod
    def from_texts(
        cls,
        texts,
        vocabulary_size=VOCABULARY_SIZE,
        sequence_length=128,
        lowercase=True,
        pair=False,
        truncate="round_robin",
        align_words=False,
        min_count=MIN_COUNT,
        vocabulary=None,
        label_piece="first",
        **kwargs,
    ):
        """A preprocessor with a vocabulary learned from `texts` (or given).

        Args:
            texts: training texts, see `learn_vocabulary`.
            vocabulary_size: the most tokens to learn, reserved ones included.
            sequence_length, lowercase, pair, truncate, align_words,
                label_piece: as for the constructor.
            min_count: see `learn_vocabulary`.
            vocabulary: a vocabulary file (`read_vocabulary`) or list used
                as it is instead of learning; `texts`, `vocabulary_size` and
                `min_count` are then unused.
        """
        check_packing(sequence_length, pair, truncate)
        if isinstance(vocabulary, (str, os.PathLike)):
            vocabulary = read_vocabulary(vocabulary)
        elif vocabulary is None:
            vocabulary = learn_vocabulary(
                texts, vocabulary_size, lowercase=lowercase, min_count=min_count
            )
        return cls(
            vocabulary, sequence_length, lowercase, pair, truncate, align_words,
            label_piece, **kwargs,
        )  # fmt: skip

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
        if self.align_words:
            return self.word_alignment(text, sequence_length)[0]
        segments = tuple(self._tokenize(s) for s in segments)
        token_ids, _ = self._packer(sequence_length)(segments)
        return {
            "token_ids": tf.cast(token_ids, "int32"),
            "padding_mask": token_ids != self.tokenizer.token_to_id(PAD),
        }

    def word_alignment(self, text, sequence_length=None):
        """`(inputs with "word_ids", words)` for `align_words` preprocessors.

        `words` holds ragged `[B, W]` `"words"` with their byte offsets
        `"starts"`, `"ends"` in `"text"` (the UTF-8 cleaned text), and
        `"cut_words"` `[B]`, the words dropped by truncation.
        """
        sequence_length = sequence_length or self.sequence_length
        text = clean_text(tf.convert_to_tensor(text))
        if text.dtype != tf.string:
            raise ValueError(f"TextPreprocessor takes strings, got {text.dtype}.")
        single = text.shape.rank == 0
        text = tf.reshape(text, [-1])
        split, starts, ends = words.split_words_with_offsets(text)
        ids, word_ids, cut = words.align_word_pieces(
            self._tokenize_words, split, sequence_length - 2, self.tokenizer.token_to_id(UNK)
        )
        token_ids, _ = self._packer(sequence_length)((ids,))
        word_ids = words.packed_word_ids(word_ids, sequence_length)
        inputs = {
            "token_ids": tf.cast(token_ids, "int32"),
            "padding_mask": token_ids != self.tokenizer.token_to_id(PAD),
            "word_ids": tf.cast(word_ids, "int32"),
        }
        found = {"words": split, "starts": starts, "ends": ends, "cut_words": cut, "text": text}
        if single:
            inputs = {k: v[0] for k, v in inputs.items()}
            found = {k: v[0] for k, v in found.items()}
        return inputs, found

    def untruncated_lengths(self, text, text_pair=None):
        """Each row's word pieces with its special tokens, before truncation (int32 [B]).

        Example:
        >>> preprocessor = TextPreprocessor(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"], 4)
        >>> preprocessor.untruncated_lengths(["a a a a", "a"]).numpy().tolist()
        [6, 3]
        """
        text = tf.reshape(tf.convert_to_tensor(text), [-1])
        if self.align_words:  # pieces word by word, as `word_alignment` makes them
            split, _, _ = words.split_words_with_offsets(clean_text(text))
            pieces = self._tokenize_words(split)
            lengths = tf.reduce_sum(pieces.row_lengths(axis=2), axis=1)
        else:
            lengths = self._tokenize(text).row_lengths()
        specials = 2
        if text_pair is not None:
            text_pair = tf.reshape(tf.convert_to_tensor(text_pair), [-1])
            lengths, specials = lengths + self._tokenize(text_pair).row_lengths(), 3
        return tf.cast(lengths, tf.int32) + specials

    def _packer(self, sequence_length):
        # Built per call, from the tokenizer's current vocabulary, because a
        # `.keras` file restores that vocabulary after `__init__`.
        return keras_hub.layers.MultiSegmentPacker(
            sequence_length,
            start_value=self.tokenizer.token_to_id(CLS),
            end_value=self.tokenizer.token_to_id(SEP),
            pad_value=self.tokenizer.token_to_id(PAD),
            truncate=self.truncate,
            **_compat.TENSORFLOW_ONLY,
        )

    def _tokenize_words(self, split):
        with _compat.tensor_outputs():  # eagerly too: no Python lists
            return tf.cast(self.tokenizer(split), "int32")

    def _tokenize(self, text):
        text = tf.convert_to_tensor(text)
        if text.dtype != tf.string:
            raise ValueError(f"TextPreprocessor takes strings, got {text.dtype}.")
        with _compat.tensor_outputs():  # eagerly too: no Python lists
            return self.tokenizer(clean_text(text))

    def compute_output_spec(self, text, text_pair=None, sequence_length=None):
        shape = tuple(text.shape) + (sequence_length or self.sequence_length,)
        spec = {
            "token_ids": keras.KerasTensor(shape, dtype="int32"),
            "padding_mask": keras.KerasTensor(shape, dtype="bool"),
        }
        if self.align_words:
            spec["word_ids"] = keras.KerasTensor(shape, dtype="int32")
        return spec

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary": None,  # saved as an asset by the tokenizer
            "sequence_length": self.sequence_length,
            "lowercase": self.lowercase,
            "pair": self.pair,
            "truncate": self.truncate,
            "align_words": self.align_words,
            "label_piece": self.label_piece,
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
