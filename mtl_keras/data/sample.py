"""The bundled sample: three tasks on generated texts, in `data/sample/`.

The files live at the repository root (`data/sample/train.tsv` and
`dev.tsv`), next to the package; they are not installed with it.
`python data/make_sample.py` regenerates them.
"""

from pathlib import Path

from mtl_keras.data.sources import FileSource
from mtl_keras.tasks import Task

# mtl_keras/data/sample.py -> the repository root is parents[2].
_SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample"

SAMPLE_TASKS = (
    Task("topic", "multiclass", 4, label_names=("sports", "politics", "tech", "food")),
    Task("sentiment", "binary", label_names=("negative", "positive")),
    Task("rating", "regression"),
)


def bundled_sample(directory=None):
    """`(tasks, train_source, dev_source)` of the generated sample data.

    The files live in `data/sample/` at the repository root, next to the
    package (they are not installed with it); `python data/make_sample.py`
    regenerates them.

    Example:
    >>> tasks, train, dev = bundled_sample()
    >>> [t.name for t in tasks]
    ['topic', 'sentiment', 'rating']
    >>> train.name, dev.path.name
    ('sample/train', 'dev.tsv')
    """
    directory = Path(_SAMPLE_DIR if directory is None else directory)
    if not (directory / "train.tsv").is_file() or not (directory / "dev.tsv").is_file():
        raise FileNotFoundError(
            f"The bundled sample is not at {directory}. It is part of the "
            "mtl_keras repository (data/sample/), not of an installed package: "
            "run from a checkout, or regenerate it with `python data/make_sample.py`."
        )
    columns = {t.name: t.name for t in SAMPLE_TASKS}
    return (
        list(SAMPLE_TASKS),
        FileSource(directory / "train.tsv", "text", columns, name="sample/train"),
        FileSource(directory / "dev.tsv", "text", columns, name="sample/dev"),
    )
