"""Separate sources mixed by a sampler: `Mixture` and the samplers.

`Mixture` mixes separate sources (usually one per task) by a sampler
(`Proportional`, `Temperature`, `Uniform`, `Annealed`). **An epoch is N
examples, N = the sum of the sources' sizes** (labelled rows). Source i
contributes exactly c_i = N * p_i examples in an epoch, rounded by largest
remainder so that the c_i sum to N. Each source is an endless stream of
passes over its rows, each pass freshly shuffled, and every epoch continues
the stream where the previous one stopped: a small source is repeated
(reshuffled each time), a large one is spread over several epochs, and no
source runs dry and stops the others. `Mixture.counts(epoch)` reports the c_i
and the datasets log them. Everything is seeded and deterministic.

(The other mode, jointly labelled rows, is `examples.joint_dataset`.)
"""

import functools
import logging

import numpy as np

from mtl_keras.data.examples import (
    DataValidationError,
    _any_label,
    _as_list,
    _concat,
    _did_you_mean,
    validate,
)
from mtl_keras.tasks import validate_tasks

logger = logging.getLogger(__package__)  # "mtl_keras.data", for every module


def _power_law(sizes, alpha):
    weights = np.asarray(sizes, "float64") ** alpha
    return weights / weights.sum()


class Proportional:
    """p_i proportional to the size n_i of source i.

    Example:
    >>> Proportional().probabilities([30, 10], epoch=0, num_epochs=1).tolist()
    [0.75, 0.25]
    """

    def probabilities(self, sizes, epoch, num_epochs):
        return _power_law(sizes, 1.0)


class Temperature:
    """p_i proportional to n_i ** (1 / temperature); 1 is proportional.

    Args:
        temperature: > 0; larger values move towards uniform.

    Example:
    >>> Temperature(2.0).probabilities([100, 25], epoch=0, num_epochs=1).round(3)
    array([0.667, 0.333])
    """

    def __init__(self, temperature=2.0):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}.")
        self.temperature = float(temperature)

    def probabilities(self, sizes, epoch, num_epochs):
        return _power_law(sizes, 1.0 / self.temperature)


class Uniform:
    """p_i = 1 / number of sources.

    Example:
    >>> Uniform().probabilities([100, 25], epoch=0, num_epochs=1).tolist()
    [0.5, 0.5]
    """

    def probabilities(self, sizes, epoch, num_epochs):
        return _power_law(sizes, 0.0)


class Annealed:
    """Annealed sampling (Stickland & Murray, 2019): p_i ∝ n_i ** alpha.

    alpha = 1 - 0.8 * (e - 1) / (E - 1) for epoch e = 1..E of E epochs: from
    proportional in the first epoch to nearly uniform (alpha = 0.2) in the
    last. With zero-based `epoch`, e = epoch + 1.

    Example:
    >>> Annealed().probabilities([100, 25], epoch=0, num_epochs=5).tolist()
    [0.8, 0.2]
    >>> Annealed().probabilities([100, 25], epoch=4, num_epochs=5).round(3)
    array([0.569, 0.431])
    """

    def probabilities(self, sizes, epoch, num_epochs):
        alpha = 1.0 if num_epochs <= 1 else 1.0 - 0.8 * epoch / (num_epochs - 1)
        return _power_law(sizes, alpha)


SAMPLERS = {
    "proportional": Proportional,
    "temperature": Temperature,
    "uniform": Uniform,
    "annealed": Annealed,
}


def get_sampler(sampler, **kwargs):
    """A sampler object from a sampler or one of the names in `SAMPLERS`.

    With a name, `kwargs` are the sampler's constructor arguments.

    Example:
    >>> get_sampler("temperature", temperature=3.0).temperature
    3.0
    >>> get_sampler("unifrom")
    Traceback (most recent call last):
    ...
    ValueError: Unknown sampler 'unifrom' (known: ['annealed', 'proportional', 'temperature', 'uniform']); did you mean 'uniform'?
    """
    if isinstance(sampler, str):
        if sampler not in SAMPLERS:
            raise ValueError(
                f"Unknown sampler {sampler!r} (known: {sorted(SAMPLERS)})"
                + _did_you_mean(sampler, SAMPLERS)
            )
        return SAMPLERS[sampler](**kwargs)
    if kwargs:
        raise ValueError(
            f"Sampler arguments {sorted(kwargs)} need a sampler name, not an object."
        )
    return sampler


def largest_remainder(total, probabilities):
    """Integers c_i with sum `total`, each floor or ceil of total * p_i.

    Example:
    >>> largest_remainder(10, [0.46, 0.34, 0.2]).tolist()  # 4.6, 3.4, 2.0
    [5, 3, 2]
    """
    exact = total * np.asarray(probabilities, "float64")
    counts = np.floor(exact).astype("int64")
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


class Mixture:
    """Separate sources (usually one per task) mixed by a sampler.

    An epoch has N = sum of the sources' sizes examples; source i gives
    exactly `counts(epoch)[i]` of them (N * p_i by largest remainder), taken
    from an endless stream of reshuffled passes over its rows that continues
    across epochs. Source order within an epoch is a seeded shuffle of the
    schedule; the dataset gathers the scheduled rows in order, in batches.

    Args:
        tasks: the model's tasks.
        sources: list of sources; their `name`s must be unique.
        sampler: a sampler object or a name in `SAMPLERS`.
        num_epochs: epochs covered by `dataset()` (and the annealing length).
        seed: seed of every shuffle.
        empty_text: "keep" or "error" (see `mtl_keras.data.sources`).
        batch_size: if set, the schedule is stratified by batch: every run
            of `batch_size` positions holds each source's share of the epoch
            (`c_i * batch_size / N`, within one), in a seeded order, so a
            source with at least as many examples as the epoch has batches
            is in every batch (for `every_task` batching).

    Example:
    >>> from mtl_keras.data import bundled_sample
    >>> tasks, train, _ = bundled_sample()
    >>> mix = Mixture(tasks, [train], sampler="uniform", num_epochs=2)
    >>> mix.counts(0) == {train.name: mix.epoch_size}
    True
    """

    def __init__(
        self,
        tasks,
        sources,
        sampler="proportional",
        num_epochs=1,
        seed=0,
        empty_text="keep",
        batch_size=None,
    ):
        self.tasks = validate_tasks(tasks)
        self.batch_size = batch_size
        sources = _as_list(sources)
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"Mixture sources need unique names, got {names}.")
        if num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1, got {num_epochs}.")
        self.sampler = get_sampler(sampler)
        self.num_epochs = num_epochs
        self.seed = seed
        self.names = names
        self.tables = []
        for table in validate(self.tasks, sources, empty_text=empty_text):
            keep = np.flatnonzero(_any_label(table))
            if len(keep) == 0:
                raise DataValidationError(f"Source {table.source} has no labelled row.")
            self.tables.append(table.take(keep))
        self.sizes = {n: len(t) for n, t in zip(names, self.tables)}
        self.epoch_size = sum(self.sizes.values())
        self._with_pair = any(t.text_pair is not None for t in self.tables)

    def probabilities(self, epoch):
        """`{source name: p_i}` in `epoch` (zero-based)."""
        p = self.sampler.probabilities(
            list(self.sizes.values()), epoch, self.num_epochs
        )
        return dict(zip(self.names, map(float, p)))

    def counts(self, epoch):
        """`{source name: examples}` in `epoch`; they sum to `epoch_size`."""
        p = list(self.probabilities(epoch).values())
        return dict(zip(self.names, map(int, largest_remainder(self.epoch_size, p))))

    def task_counts(self, epoch):
        """`{task: labelled examples}` in `epoch`, exactly."""
        totals = dict.fromkeys((t.name for t in self.tasks), 0)
        for i, table in enumerate(self.tables):
            rows = self._stream(i, epoch)
            for name in totals:
                totals[name] += int(table.masks[name][rows].sum())
        return totals

    def _stream(self, i, epoch):
        """Row indices source i gives in `epoch`: a slice of its stream."""
        size = len(self.tables[i])
        start = sum(self.counts(e)[self.names[i]] for e in range(epoch))
        stop = start + self.counts(epoch)[self.names[i]]
        passes = [
            np.random.default_rng([self.seed, 2, i, p]).permutation(size)
            for p in range(start // size, (stop - 1) // size + 1)
        ]
        offset = (start // size) * size
        if not passes:
            return np.zeros(0, "int64")
        return np.concatenate(passes)[start - offset : stop - offset]

    def _schedule(self, epoch):
        counts = list(self.counts(epoch).values())
        choice = np.repeat(np.arange(len(counts), dtype="int64"), counts)
        rng = np.random.default_rng([self.seed, 1, epoch])
        if self.batch_size is None:
            return rng.permutation(choice)
        # Source i's k-th example sits at (k + phase_i) / c_i of the epoch: in
        # position order, any run of positions holds each source's share.
        phases = rng.random(len(counts))
        keys = np.concatenate([(np.arange(c) + p) / c for c, p in zip(counts, phases)])
        choice = choice[np.argsort(keys, kind="stable")]
        for start in range(0, len(choice), self.batch_size):
            rng.shuffle(choice[start : start + self.batch_size])  # a view: in place
        return choice

    def epoch_dataset(self, epoch):
        """The examples of one epoch (zero-based)."""
        return self._dataset([epoch])

    @property
    def table(self):
        """Every source's rows in one `Examples` table, source after source."""
        return self._all_rows

    def epoch_rows(self, epoch):
        """Row indices into `table` of the examples of `epoch`, in order."""
        return self._rows([epoch])

    def dataset(self):
        """All `num_epochs` epochs, one after the other (N examples each).

        For `model.fit(..., epochs=num_epochs)` pass
        `steps_per_epoch = epoch_size // batch_size` so that Keras keeps one
        iterator over the epochs.
        """
        return self._dataset(range(self.num_epochs))

    def _dataset(self, epochs):
        for epoch in epochs:
            logger.info(
                "Mixture epoch %d: %d examples; per source %s; labelled per task %s",
                epoch,
                self.epoch_size,
                self.counts(epoch),
                self.task_counts(epoch),
            )
        return self._all_rows.to_dataset(self._rows(epochs), with_pair=self._with_pair)

    @functools.cached_property
    def _all_rows(self):
        """Every source's rows in one table, source after source."""
        return _concat(self.tables, " + ".join(self.names))

    def _rows(self, epochs):
        """Row indices into `_all_rows` of the examples of `epochs`, in order.

        The schedule says which source each position draws from; the k-th
        position of source i takes the k-th row of source i's stream. One
        index array over all sources lets the dataset gather whole batches
        of rows at a time instead of choosing a source example by example.
        """
        choice = np.concatenate([self._schedule(e) for e in epochs])
        offsets = np.cumsum([0] + [len(t) for t in self.tables])
        rows = np.empty(len(choice), "int64")
        for i in range(len(self.tables)):
            stream = np.concatenate([self._stream(i, e) for e in epochs])
            rows[choice == i] = offsets[i] + stream
        return rows
