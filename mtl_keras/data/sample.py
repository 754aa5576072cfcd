"""The bundled sample: five tasks (one of each kind) on generated texts, shipped with the package.

The files are package data (`mtl_keras/data/bundled/sample/train.tsv` and
`dev.tsv`), so an installed wheel has them too; `python data/make_sample.py`
in a checkout regenerates them.
"""

from pathlib import Path

from mtl_keras.data.sources import FileSource
from mtl_keras.tasks import Task

# The `bundled` data root of configs (`mtl_keras.config`): package data.
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
_SAMPLE_DIR = BUNDLED_DIR / "sample"

SAMPLE_TASKS = (
    Task("topic", "multiclass", 4, label_names=("sports", "politics", "tech", "food")),
    Task("sentiment", "binary", label_names=("negative", "positive")),
    Task("rating", "regression"),
    Task("aspects", "multilabel", 4, label_names=("price", "service", "quality", "speed")),
    Task("mentions", "tagging", 4, label_names=("O", "B-item", "B-time", "I-time")),
)


def bundled_sample(directory=None, tasks=None):
    """`(tasks, train_source, dev_source)` of the generated sample data.

    The files are installed with the package (`BUNDLED_DIR / "sample"`);
    `python data/make_sample.py` in a checkout regenerates them. `tasks`
    (names) keeps only those tasks, in the sample's order.

    Example:
    >>> tasks, train, dev = bundled_sample()
    >>> [t.name for t in tasks]
    ['topic', 'sentiment', 'rating', 'aspects', 'mentions']
    >>> train.name, dev.path.name
    ('sample/train', 'dev.tsv')
    >>> [t.kind for t in bundled_sample(tasks=["rating", "topic"])[0]]
    ['multiclass', 'regression']
    """
    directory = Path(_SAMPLE_DIR if directory is None else directory)
    if not (directory / "train.tsv").is_file() or not (directory / "dev.tsv").is_file():
        raise FileNotFoundError(
            f"The bundled sample is not at {directory}; reinstall mtl_keras, or "
            "regenerate it in a checkout with `python data/make_sample.py`."
        )
    names = [t.name for t in SAMPLE_TASKS]
    unknown = sorted(set(tasks or ()) - set(names))
    if unknown:
        raise ValueError(f"The bundled sample has no task {unknown[0]!r} (tasks: {names}).")
    kept = [t for t in SAMPLE_TASKS if tasks is None or t.name in tasks]
    columns = {t.name: t.name for t in kept}
    return (
        kept,
        FileSource(directory / "train.tsv", "text", columns, name="sample/train"),
        FileSource(directory / "dev.tsv", "text", columns, name="sample/dev"),
    )
