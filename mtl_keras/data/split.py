"""A seeded, stratified dev split of training sources (`data.split` in a config).

When a config gives no dev sources but `split: {dev_fraction: 0.1, seed: 0}`,
each training source gives `round(dev_fraction * rows)` of its rows to dev
(at least one row stays for training) and keeps the rest for training: a row
is never in both. The rows are chosen per source:

* **Stratified** by the labels of the source's first task (in the config's
  task order) whose kind has one class per row (`TaskKind.strata`: binary,
  multiclass); rows without that label are a stratum of their own. Each
  stratum gives its share by largest remainder, so every class's dev count
  is within one row of `dev_fraction` times its count. A source with no such
  task is split at random.
* **Seeded**: the rows of a stratum are drawn from
  `numpy.random.default_rng([seed, crc32(source name)])`, so the same seed,
  data and config give the same rows (and a new source leaves the others'
  split unchanged); another seed gives other rows.

Rows are the zero-based data rows of a source in file order (after
`max_rows`; a header line is not a row): row 0 is the first data row. The
split's record (`split_sources(...)[2]`) lists each source's dev rows and
counts; `mtl-keras train` writes it to `dev_split.json`.
"""

import dataclasses
import numbers
import zlib

import numpy as np

from mtl_keras.data.examples import validate
from mtl_keras.data.mixing import largest_remainder


@dataclasses.dataclass(frozen=True)
class DevSplit:
    """The `data.split` section: the share of each training source that becomes dev.

    Args:
        dev_fraction: the share of rows taken for dev, in (0, 1).
        seed: the seed of the row draw.

    Example:
    >>> DevSplit(dev_fraction=0.1).seed
    0
    >>> DevSplit(dev_fraction=1.5)
    Traceback (most recent call last):
    ...
    ValueError: dev_fraction must be a number in (0, 1), got 1.5.
    """

    dev_fraction: float
    seed: int = 0

    def __post_init__(self):
        fraction = self.dev_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not (
            0 < fraction < 1
        ):
            raise ValueError(f"dev_fraction must be a number in (0, 1), got {fraction!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ValueError(f"seed must be an integer, got {self.seed!r}.")


class SplitPart:
    """The rows of `source` at `rows`: the training or the dev part of a split.

    It offers what the datasets use of a source (`read`, `tasks`, `name`,
    `location`); the training part keeps the source's name (mixture counts),
    the dev part's name ends in "(dev split)".

    Example:
    >>> from mtl_keras.data import bundled_sample
    >>> tasks, train, _ = bundled_sample()
    >>> part = SplitPart(train, [0, 5, 7], "dev")
    >>> len(part.read(tasks)), part.name
    (3, 'sample/train (dev split)')
    """

    def __init__(self, source, rows, part):
        self.source, self.part = source, part
        self.rows = np.asarray(rows, "int64")
        self.tasks = source.tasks
        self.name = source.name if part == "train" else f"{source.name} (dev split)"
        self.location = f"{source.location} ({part} rows of data.split)"
        self._cache = {}

    def __len__(self):
        return len(self.rows)

    def read(self, tasks, empty_text="keep"):
        """The source's `Examples` at `rows`."""
        key = (tuple(tasks), empty_text)
        if key not in self._cache:
            self._cache[key] = self.source.read(tasks, empty_text).take(self.rows)
        return self._cache[key]


def stratified_rows(strata, dev_fraction, rng):
    """The sorted dev rows: each stratum's share by largest remainder, drawn by `rng`.

    Example:
    >>> strata = np.array([0] * 10 + [1] * 30)
    >>> rows = stratified_rows(strata, 0.25, np.random.default_rng(0))
    >>> len(rows), int((strata[rows] == 0).sum())
    (10, 3)
    """
    strata = np.asarray(strata)
    total = min(int(round(dev_fraction * len(strata))), max(0, len(strata) - 1))
    values, inverse = np.unique(strata, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(values))
    counts = largest_remainder(total, sizes / max(1, sizes.sum()))
    chosen = [
        rng.permutation(np.flatnonzero(inverse == k))[: counts[k]] for k in range(len(values))
    ]
    return np.sort(np.concatenate(chosen or [np.zeros(0, "int64")])).astype("int64")


def _stratifier(tasks, source, table):
    """The first task of `source` (in `tasks` order) whose kind gives strata."""
    for task in tasks:
        if task.name in source.tasks:
            strata = task.task_kind.strata(task, table.labels[task.name], table.masks[task.name])
            if strata is not None:
                return task.name, strata
    return None, np.zeros(len(table), "int64")


def split_sources(tasks, sources, split, *, empty_text="keep", fixed=None):
    """`(train_parts, dev_parts, record)`: each source's rows split by a `DevSplit`.

    Args:
        tasks: the model's tasks (the sources are read and checked for them).
        sources: the training sources.
        split: a `DevSplit`.
        empty_text: as for `validate`.
        fixed: instead of drawing, the entries of an earlier `record["sources"]`
            (one per source, in order): their `dev_rows` are used as they are.

    Example:
    >>> from mtl_keras.data import bundled_sample
    >>> tasks, train, _ = bundled_sample()
    >>> train_parts, dev_parts, record = split_sources(tasks, [train], DevSplit(0.1, seed=1))
    >>> len(train_parts[0]), len(dev_parts[0]), record["sources"][0]["stratify"]
    (1800, 200, 'topic')
    """
    tables = validate(tasks, sources, empty_text=empty_text)
    train_parts, dev_parts, entries = [], [], []
    for i, (source, table) in enumerate(zip(sources, tables)):
        name, strata = _stratifier(tasks, source, table)
        if fixed is not None:
            name, dev = fixed[i]["stratify"], np.asarray(fixed[i]["dev_rows"], "int64")
        else:
            rng = np.random.default_rng([split.seed, zlib.crc32(source.name.encode("utf-8"))])
            dev = stratified_rows(strata, split.dev_fraction, rng)
        train = np.setdiff1d(np.arange(len(table)), dev)
        train_parts.append(SplitPart(source, train, "train"))
        dev_parts.append(SplitPart(source, dev, "dev"))
        values, counts = np.unique(strata[dev], return_counts=True)
        entries.append({
            "source": source.name,
            "location": source.location,
            "rows": len(table),
            "train": len(train),
            "dev": len(dev),
            "stratify": name,
            "dev_per_class": {str(int(v)): int(c) for v, c in zip(values, counts)}
            if name
            else None,
            "dev_rows": [int(r) for r in dev],
        })
    record = {
        "dev_fraction": split.dev_fraction,
        "seed": split.seed,
        "rows": "zero-based data rows of each source in file order (a header is not a row)",
        "dev_per_class": "dev rows per class index of the stratifying task (-1: unlabelled)",
        "sources": entries,
    }
    return train_parts, dev_parts, record
