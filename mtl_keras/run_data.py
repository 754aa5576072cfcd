"""The data of a run: its sources read and checked, and the preprocessor made from them.

`read_data(config)` reads and validates every training and dev source (and
makes the dev split of `data.split`), and builds the epochs' rows (joint
rows or a mixture); `make_preprocessor` learns the vocabulary from the
training texts (or takes a preset's tokenizer), saying what it learned.
"""

import dataclasses
import time

from mtl_keras import data as data_lib
from mtl_keras.progress import learning_line, read_sources, split_line, vocabulary_line


@dataclasses.dataclass
class _Data:
    train_sources: list
    dev_sources: list
    tables: list  # `data.Examples` of the training sources
    dev_tables: list  # and of the dev sources
    rows: object  # a `data.JointRows` or a `data.Mixture`: the examples of each epoch
    examples_per_epoch: int
    split: dict = None  # with `data.split`: its record (`data.split_sources`)


def read_data(config, verbose=0):
    """Builds and checks the sources of a config; nothing is trained yet.

    `verbose`: a line per source read, per dev split, and when checked.

    Example:
    >>> from mtl_keras.config import load_config
    >>> read_data(load_config()).examples_per_epoch  # rows with at least one label
    2000
    """
    tasks, empty_text = config.tasks, config.data.empty_text
    listed = read_sources("train", config.listed_sources("train"), tasks, empty_text, verbose)
    train, dev, split = config.train_and_dev(listed)
    if split is None:
        read_sources("dev", dev, tasks, empty_text, verbose)
    elif verbose:
        for entry in split["sources"]:
            print(split_line(entry, split), flush=True)
    tables = data_lib.validate(tasks, train, empty_text=empty_text)
    dev_tables = data_lib.validate(tasks, dev, empty_text=empty_text, split="evaluation")
    sampler, seed = config.sampler_object(), config.training.seed
    every_task = config.training.batching == "every_task"
    if sampler is None:
        rows = data_lib.JointRows(tasks, train, seed=seed, empty_text=empty_text)
    else:
        rows = data_lib.Mixture(
            tasks,
            train,
            sampler=sampler,
            num_epochs=config.training.epochs,
            seed=seed,
            empty_text=empty_text,
            batch_size=config.training.batch_size if every_task else None,
        )
    if verbose:
        print(f"Data checked: {sum(map(len, tables))} training rows in {len(train)} source(s), "
              f"{rows.epoch_size} examples per epoch; {sum(map(len, dev_tables))} dev rows.",
              flush=True)
    return _Data(train, dev, tables, dev_tables, rows, rows.epoch_size, split)


def make_preprocessor(config, texts, verbose=0):
    """`config.build_preprocessor(texts)`, saying what it learns (with `verbose`).

    Example:
    >>> from mtl_keras.config import load_config
    >>> config = load_config(overrides=["preprocessor.min_count=2"])
    >>> make_preprocessor(config, ["the cat sat"] * 3, verbose=1).vocabulary_size < 1000  # doctest: +ELLIPSIS
    Learning the vocabulary from 3 texts (vocabulary_size 1000, min_count 2)...
    Vocabulary: ... tokens learned (1000 asked; words seen fewer than 2 times ...
    True
    """
    learns = config.preset is None and config.preprocessor.get("vocabulary") is None
    if verbose and learns:
        print(learning_line(config.preprocessor, len(texts)), flush=True)
    start = time.perf_counter()
    preprocessor = config.build_preprocessor(texts)
    if verbose:
        print(vocabulary_line(config.preprocessor, learns, preprocessor.vocabulary_size,
                              time.perf_counter() - start), flush=True)
    return preprocessor


def training_texts(tables):
    """Every training text (and second text of pairs), for the vocabulary.

    Example:
    >>> from mtl_keras.config import load_config
    >>> len(training_texts(read_data(load_config()).tables))
    2000
    """
    texts = []
    for table in tables:
        texts.extend(table.text.tolist())
        if table.text_pair is not None:
            texts.extend(table.text_pair.tolist())
    return texts
