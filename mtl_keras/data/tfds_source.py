"""`TfdsSource`: the examples of a TensorFlow Datasets split, as a checked `Examples` table.

The text and label policies are those of `mtl_keras.data.sources`. tfds class
labels arrive as class indices: where a task names its classes, the names must
be the feature's `ClassLabel` names in the same order (checked before any
label is parsed), so an index can never mean another class.
"""

import dataclasses
import functools
import numbers

import numpy as np

import mtl_keras.data.conll as conll
from mtl_keras.data.examples import DataValidationError, _did_you_mean
from mtl_keras.data.sources import _Source

# The 28 boolean label features of tfds `goemotions`, in label-id order.
GOEMOTIONS_LABELS = (
    "admiration amusement anger annoyance approval caring confusion curiosity "
    "desire disappointment disapproval disgust embarrassment excitement fear "
    "gratitude grief joy love nervousness optimism pride realization relief "
    "remorse sadness surprise neutral"
).split()


@dataclasses.dataclass(eq=False)
class TfdsSource(_Source):
    """Examples of a TensorFlow Datasets split, loaded with `tfds.load`.

    The arguments are the keys of a config's tfds entry: `TfdsSource(**entry)`.
    Nothing is loaded before `read`.

    Args:
        tfds: tfds name, e.g. "glue/sst2", "glue/rte", "ag_news_subset",
            "goemotions".
        split: tfds split, e.g. "train", "validation", "test[:100]".
        text: feature holding the text.
        tasks: `{task_name: feature}` (or a list of task names that are also
            feature names); a list of boolean features (e.g.
            `GOEMOTIONS_LABELS`) makes a multi-hot label. A negative integer
            value is a missing label (tfds writes -1 for the unlabelled GLUE
            test splits).
        text_pair: feature holding the second text of a pair.
        data_dir: tfds data directory.
        label_map: `{task_name: {raw value: label}}`, applied before parsing.
        max_rows: read at most this many examples.
        name: short name for logs and mixture counts; default "<tfds>:<split>".
        download: let tfds download and prepare the dataset if it is not in
            `data_dir` yet (needs network). Off by default: a dataset that is
            not prepared fails at once, instead of after minutes of retries.

    Example:
    >>> import tensorflow_datasets as tfds
    >>> from mtl_keras.tasks import Task
    >>> with tfds.testing.mock_data(num_examples=4,
    ...                             policy=tfds.testing.MockPolicy.USE_CODE):
    ...     source = TfdsSource("glue/sst2", "train", "sentence",
    ...                         {"sentiment": "label"})
    ...     examples = source.read([Task("sentiment", "binary")])
    >>> len(examples)
    4
    >>> TfdsSource("glue/sst2", "train", "sentence", ["label"]).get_config()
    {'tfds': 'glue/sst2', 'split': 'train', 'text': 'sentence', 'tasks': {'label': 'label'}}
    """

    tfds: str
    split: str
    text: str = "text"
    tasks: dict | list = None
    text_pair: str | None = None
    data_dir: str | None = None
    label_map: dict | None = None
    max_rows: int | None = None
    name: str | None = None
    download: bool = False

    def __post_init__(self):
        self.name = self.name or self._derived_defaults()["name"]
        self._check_arguments()
        if not isinstance(self.download, bool):
            raise ValueError(f"download must be True or False, got {self.download!r}.")
        self.location = f"tfds {self.tfds!r} split {self.split!r}"

    def _derived_defaults(self):
        return {"name": f"{self.tfds}:{self.split}"}

    def _records(self, tasks):
        import tensorflow_datasets as tfds

        try:
            ds, info = tfds.load(self.tfds, split=self.split, data_dir=self.data_dir,
                                 shuffle_files=False, download=self.download,
                                 with_info=True)  # fmt: skip
        except Exception as error:  # tfds raises several types (name, not prepared)
            raise DataValidationError(
                f"{self.location} (tasks {', '.join(self.tasks)}) cannot be loaded: "
                f"{str(error).strip().splitlines()[0]} Prepare it in the tfds data "
                "directory, set `data_dir` to where it is, or `download: true` to "
                "let tfds download it (needs network); local files work offline."
            ) from None
        self._check_class_order(tasks, info.features)
        if self.max_rows is not None:
            ds = ds.take(self.max_rows)
        for number, example in enumerate(tfds.as_numpy(ds)):
            where = f"example {number}"
            get = functools.partial(self._feature, example, where=where)
            text = conll.words_text(_decode(get(self.text)), self.text, self.location, where)
            pair = None if self.text_pair is None else _decode(get(self.text_pair))
            raw = {}
            for task, key in self.tasks.items():
                if isinstance(key, str):
                    value = get(key)
                    if isinstance(value, numbers.Integral) and value < 0:
                        value = None  # tfds marks unlabelled examples with -1
                    raw[task] = _decode(value)
                else:
                    raw[task] = np.array([bool(get(k)) for k in key])
            yield where, text, pair, raw

    def _check_class_order(self, tasks, features):
        """Refuses a task whose class names sit at other indices than tfds's.

        tfds gives class indices; a task may rename the classes, but a name
        that is also a `ClassLabel` name must have that class's index.
        """
        for task in tasks:
            key = self.tasks.get(task.name)
            feature = features[key] if isinstance(key, str) and key in features else None
            feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel): tags
            names = list(getattr(feature, "names", None) or [])
            if task.label_names is None or not names:
                continue
            moved = [(i, n) for i, n in enumerate(task.label_names) if n in names and names.index(n) != i]
            if moved:
                i, name = moved[0]
                raise DataValidationError(
                    f"Task {task.name!r}: class {name!r} is index {i} in label_names but "
                    f"index {names.index(name)} in feature {key!r} of {self.location}, "
                    f"which gives class indices. List label_names in the feature's "
                    f"order: {names}."
                )

    def _feature(self, example, key, where):
        if key not in example:
            raise DataValidationError(
                f"{self.location}, {where}: no feature {key!r} (features: "
                f"{sorted(example)})" + _did_you_mean(key, example)
            )
        return example[key]


def _decode(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.dtype.char in "OS":  # a token sequence
        return [_decode(v) for v in value.tolist()]
    return value
