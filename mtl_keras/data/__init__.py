"""Data: sources to checked raw examples to `tf.data` datasets.

`sources` reads files and tfds splits into `examples.Examples` tables,
`examples` checks them against the model's tasks and builds the joint and
evaluation datasets, `mixing` mixes separate sources by a sampler,
`split` takes a seeded, stratified dev split from training sources, and
`sample` is the bundled sample. Each module's docstring explains its part
(text policy and label cells: `sources`; the joint epoch: `examples`; the
mixture epoch: `mixing`). See docs/CONTRACTS.md for the dataset contract.
"""

from mtl_keras.data.examples import (
    EMPTY_TEXT_POLICIES,
    DataValidationError,
    Examples,
    JointRows,
    eval_dataset,
    eval_datasets,
    joint_dataset,
    validate,
)
from mtl_keras.data.mixing import (
    SAMPLERS,
    Annealed,
    Mixture,
    Proportional,
    Temperature,
    Uniform,
    get_sampler,
    largest_remainder,
)
from mtl_keras.data.sample import BUNDLED_DIR, SAMPLE_TASKS, bundled_sample
from mtl_keras.data.sources import FileSource
from mtl_keras.data.split import DevSplit, SplitPart, split_sources
from mtl_keras.data.tfds_source import GOEMOTIONS_LABELS, TfdsSource

__all__ = [
    "EMPTY_TEXT_POLICIES",
    "GOEMOTIONS_LABELS",
    "SAMPLERS",
    "SAMPLE_TASKS",
    "BUNDLED_DIR",
    "Annealed",
    "DataValidationError",
    "DevSplit",
    "Examples",
    "JointRows",
    "FileSource",
    "Mixture",
    "Proportional",
    "SplitPart",
    "Temperature",
    "TfdsSource",
    "Uniform",
    "bundled_sample",
    "eval_dataset",
    "eval_datasets",
    "get_sampler",
    "joint_dataset",
    "largest_remainder",
    "split_sources",
    "validate",
]
