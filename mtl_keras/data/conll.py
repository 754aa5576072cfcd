"""Pre-tokenized text: CoNLL column files, CoNLL-U, and token lists.

Each yields one record per sentence: `(where, tokens, {column: tags})`,
with `where` naming the sentence's lines. `FileSource` (formats `conll` and
`conllu`) turns them into rows whose text is the tokens joined by spaces
(`mtl_keras.words.join_words`), so the word rule gives the tokens back.

* **CoNLL** (the CoNLL-2003 layout): whitespace-separated columns, token
  first by default; a line that is empty after `rstrip()` ends a sentence
  (WNUT-17 ends some with a lone tab); `-DOCSTART-` lines are skipped.
* **CoNLL-U** (Universal Dependencies): 10 tab-separated columns
  `ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC`; comments (`#`),
  multiword-token ranges (`3-4`) and empty nodes (`8.1`) are skipped, so the
  tokens are the syntactic words (`do`, `n't`), each with its tags.
"""

from mtl_keras.data.examples import DataValidationError
from mtl_keras.words import join_words

CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


def conllu_column(column, path):
    """The index of a CoNLL-U column given by name (`"upos"`) or index.

    Example:
    >>> conllu_column("UPOS", "x.conllu"), conllu_column(4, "x.conllu")
    (3, 4)
    """
    if isinstance(column, int) and not isinstance(column, bool):
        if 0 <= column < len(CONLLU_COLUMNS):
            return column
    elif isinstance(column, str) and column.lower() in CONLLU_COLUMNS:
        return CONLLU_COLUMNS.index(column.lower())
    raise DataValidationError(
        f"{path}: column {column!r} is not a CoNLL-U column; use one of "
        f"{list(CONLLU_COLUMNS)} or an index 0-9."
    )


def conll_column(column, path):
    """The index of a CoNLL column: an int (negative counts from the end).

    Example:
    >>> conll_column(-1, "x.conll")
    -1
    """
    if isinstance(column, int) and not isinstance(column, bool):
        return column
    raise DataValidationError(
        f"{path}: CoNLL columns are given by index (0 = token, -1 = last), got {column!r}."
    )


def read_conll(lines, path, token_column, tag_columns):
    """Sentences of a CoNLL column file (an iterable of lines).

    Example:
    >>> lines = ["-DOCSTART- -X- O O", "", "Ann NNP B-PER", "Lee NNP I-PER", "\\t", "Hi UH O"]
    >>> [(w, t, c[-1]) for w, t, c in read_conll(lines, "x", 0, [-1])]
    [('lines 3-4', ['Ann', 'Lee'], ['B-PER', 'I-PER']), ('line 6', ['Hi'], ['O'])]
    """
    tokens, tags, first = [], {c: [] for c in tag_columns}, None
    needed = max([token_column, *tag_columns], key=lambda c: c if c >= 0 else -c - 1)
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.rstrip():
            if tokens:
                yield _where(first, number - 1), tokens, tags
            tokens, tags, first = [], {c: [] for c in tag_columns}, None
            continue
        fields = line.split()
        if fields[0] == "-DOCSTART-":
            continue
        size = needed + 1 if needed >= 0 else -needed
        if len(fields) < size:
            raise DataValidationError(
                f"{path}, line {number}: {len(fields)} column(s), expected at least "
                f"{size}. Found {line!r}."
            )
        first = first or number
        tokens.append(fields[token_column])
        for c in tag_columns:
            tags[c].append(fields[c])
    if tokens:
        yield _where(first, number), tokens, tags


def read_conllu(lines, path, token_column, tag_columns):
    """Sentences of a CoNLL-U file: syntactic words and the chosen columns.

    Example:
    >>> lines = ["# text = don't", "1-2\\tdon't\\t_\\t_\\t_\\t_\\t_\\t_\\t_\\t_",
    ...          "1\\tdo\\tdo\\tAUX\\tVBP\\t_\\t0\\troot\\t_\\t_",
    ...          "2\\tn't\\tnot\\tPART\\tRB\\t_\\t1\\tadvmod\\t_\\t_",
    ...          "2.1\\tx\\t_\\t_\\t_\\t_\\t_\\t_\\t_\\t_", ""]
    >>> list(read_conllu(lines, "x", 1, [3]))
    [('lines 3-4', ['do', "n't"], {3: ['AUX', 'PART']})]
    """
    tokens, tags, first, last = [], {c: [] for c in tag_columns}, None, None
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            if tokens:
                yield _where(first, last), tokens, tags
            tokens, tags, first = [], {c: [] for c in tag_columns}, None
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise DataValidationError(
                f"{path}, line {number}: {len(fields)} tab-separated column(s), "
                f"CoNLL-U has 10. Found {line!r}."
            )
        if not fields[0].isdigit():  # a multiword range (3-4) or an empty node (8.1)
            continue
        first, last = first or number, number
        tokens.append(fields[token_column])
        for c in tag_columns:
            tags[c].append(fields[c])
    if tokens:
        yield _where(first, last), tokens, tags


def _where(first, last):
    return f"line {first}" if first == last else f"lines {first}-{last}"


def words_text(value, column, path, where):
    """A text cell as is; a list of tokens (pre-tokenized words) joined by spaces.

    Used for JSONL token lists and tfds token sequences too.

    Example:
    >>> words_text(["New", "York"], "tokens", "x.jsonl", "line 1")
    'New York'
    """
    if not isinstance(value, (list, tuple)):
        return value
    try:
        return join_words(value)
    except ValueError as error:
        raise DataValidationError(
            f"Text column {column!r} of {path}, {where}: {error} (tokens are "
            "words: they are joined by spaces and split again by whitespace)."
        ) from None
