"""Run configuration: frozen dataclasses loaded from YAML or JSON.

A run config names the tasks, where their data comes from, the model size,
the precision, how sources are mixed and how long to train:

    tasks:                      # one entry per task (the fields of `Task`)
      - {name: topic, kind: multiclass, num_classes: 4}
    data_root: ../shared/data   # base of relative `file` paths; see below
    data:
      train:                    # sources; each maps tasks to its columns
        - {file: sst2/train.tsv, text: sentence, tasks: {sst2: label}}
        - {tfds: glue/cola, split: train, text: sentence, tasks: {cola: label}}
      dev: [...]                # the same shape; every task needs both
    model: {size: tiny, hidden_dim: 32}
    precision: auto             # float32 | mixed_float16 | mixed_bfloat16 | auto
    sampler: joint              # joint | proportional | uniform | annealed
                                # | {name: temperature, temperature: 2.0}
    training: {epochs: 3, batch_size: 32, learning_rate: 0.001, seed: 0}

A source that carries several tasks (one column each) is jointly labelled; a
source per task gives per-task data. `sampler: joint` trains on the rows of
all sources, one pass per epoch; the other samplers mix the sources with
`mtl_keras.data.Mixture`.

`data_root` (default: the current directory) is resolved against the
current directory; `bundled` means the `data/` folder of the mtl_keras
checkout, which holds the generated sample. Files are checked when the
config loads.

Every key is checked: an unknown key, an unknown task kind or a missing file
raises `ConfigError` with a message that says what to fix.

Example:
>>> config = load_config()  # the bundled sample
>>> [t.name for t in config.tasks]
['topic', 'sentiment', 'rating']
>>> config.encoder_config(vocabulary_size=500).hidden_dim == config.model.hidden_dim
True
"""

import dataclasses
import difflib
import json
import os
from pathlib import Path

import yaml

from mtl_keras.backbone import POOLING_MODES, EncoderConfig
from mtl_keras.tasks import KINDS, Task

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")
SAMPLER_NAMES = ("joint", "proportional", "temperature", "uniform", "annealed")
BUNDLED = "bundled"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "sample.yaml"

# Model sizes: defaults for the fields of `ModelConfig` that are not given.
MODEL_SIZES = {
    "tiny": dict(
        vocabulary_size=2000,
        sequence_length=64,
        hidden_dim=32,
        num_layers=1,
        num_heads=2,
        intermediate_dim=None,
        dropout=0.1,
    ),
    "small": dict(
        vocabulary_size=8000,
        sequence_length=128,
        hidden_dim=128,
        num_layers=2,
        num_heads=4,
        intermediate_dim=None,
        dropout=0.1,
    ),
    "base": dict(
        vocabulary_size=16000,
        sequence_length=128,
        hidden_dim=256,
        num_layers=4,
        num_heads=4,
        intermediate_dim=None,
        dropout=0.1,
    ),
}


class ConfigError(ValueError):
    """A problem in a run config; the message says where and what to fix."""


def _did_you_mean(word, choices):
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _check_keys(mapping, cls, where, required=()):
    """Rejects keys of `mapping` that are not fields of dataclass `cls`."""
    if not isinstance(mapping, dict):
        raise ConfigError(
            f"{where} must be a mapping of keys to values, got "
            f"{type(mapping).__name__} {mapping!r}."
        )
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in mapping:
        if key not in valid:
            raise ConfigError(
                f"Unknown key {key!r} in {where}. Valid keys: "
                f"{', '.join(valid)}.{_did_you_mean(key, valid)}"
            )
    for key in required:
        if key not in mapping:
            raise ConfigError(
                f"{where} needs the key {key!r}. Valid keys: {', '.join(valid)}."
            )


def _check_type(value, types, where, what):
    if isinstance(value, bool) and bool not in _as_tuple(types):
        raise ConfigError(
            f"{where}: {what} must be {_type_names(types)}, got {value!r}."
        )
    if not isinstance(value, types):
        raise ConfigError(
            f"{where}: {what} must be {_type_names(types)}, got {value!r}."
        )
    return value


def _as_tuple(types):
    return types if isinstance(types, tuple) else (types,)


def _type_names(types):
    return " or ".join(
        {
            int: "an integer",
            float: "a number",
            str: "a string",
            bool: "true or false",
        }.get(t, t.__name__)
        for t in _as_tuple(types)
    )


def _positive_int(value, where, what, minimum=1):
    _check_type(value, int, where, what)
    if value < minimum:
        raise ConfigError(f"{where}: {what} must be >= {minimum}, got {value}.")
    return value


# --------------------------------------------------------------------------
# Sections.


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """One data source: a local file or a tfds name, mapping tasks to columns.

    Args:
        file: path of a CSV/TSV/JSONL file, relative to `data_root`.
        tfds: a TensorFlow Datasets name, e.g. `glue/sst2`.
        split: the tfds split (required with `tfds`), e.g. `validation`.
        text: the text column (header name or 0-based index) or tfds feature.
        text_pair: the second text of sentence pairs.
        tasks: `{task: column}`; a list of names means column = task name. For
            tfds, a list of boolean features makes a multi-hot label.
        format, quoting, header, column_names: how to read a file (see
            `mtl_keras.data.FileSource`); `quoting: none` for GLUE files.
        label_map: `{task: {raw value: label}}`, e.g. AG News 1..4 to names.
        max_rows: read at most this many rows.
        name: a short name for logs (default: the path or tfds name).
        data_dir: the tfds data directory.
    """

    file: str = None
    tfds: str = None
    split: str = None
    text: object = "text"
    text_pair: object = None
    tasks: dict = None
    format: str = None
    quoting: str = "csv"
    header: bool = True
    column_names: tuple = None
    label_map: dict = None
    max_rows: int = None
    name: str = None
    data_dir: str = None

    @classmethod
    def parse(cls, mapping, where, task_names):
        _check_keys(mapping, cls, where, required=("tasks",))
        values = dict(mapping)
        if (values.get("file") is None) == (values.get("tfds") is None):
            raise ConfigError(
                f"{where} needs exactly one of `file` (a local file) or `tfds` "
                "(a TensorFlow Datasets name)."
            )
        kind = "file" if values.get("file") is not None else "tfds"
        _check_type(values[kind], str, where, f"`{kind}`")
        if kind == "tfds" and values.get("split") is None:
            raise ConfigError(f"{where} (tfds {values['tfds']!r}) needs a `split`.")
        only = {
            "file": ("format", "quoting", "header", "column_names"),
            "tfds": ("split", "data_dir"),
        }
        other = "tfds" if kind == "file" else "file"
        for key in only[other]:
            if key in values and values[key] is not None:
                raise ConfigError(
                    f"{where}: `{key}` applies to {other} sources only; this "
                    f"source reads {kind} {values[kind]!r}."
                )
        for key in ("text", "text_pair"):
            if values.get(key) is not None:
                _check_type(values[key], (str, int), where, f"`{key}`")
        values["tasks"] = _parse_source_tasks(values["tasks"], where, task_names)
        if values.get("quoting", "csv") not in ("csv", "none"):
            raise ConfigError(
                f"{where}: quoting must be 'csv' or 'none', got {values['quoting']!r}."
            )
        if values.get("format") is not None and values["format"] not in (
            "csv",
            "tsv",
            "jsonl",
        ):
            raise ConfigError(
                f"{where}: format must be 'csv', 'tsv' or 'jsonl', got "
                f"{values['format']!r}."
            )
        if "header" in values:
            _check_type(values["header"], bool, where, "`header`")
        if values.get("column_names") is not None:
            names = values["column_names"]
            if not isinstance(names, (list, tuple)):
                raise ConfigError(f"{where}: column_names must be a list of names.")
            values["column_names"] = tuple(str(n) for n in names)
        if values.get("max_rows") is not None:
            _positive_int(values["max_rows"], where, "max_rows")
        if values.get("label_map") is not None:
            values["label_map"] = _parse_label_map(
                values["label_map"], where, values["tasks"]
            )
        return cls(**values)

    @property
    def location(self):
        return self.file if self.file is not None else f"tfds {self.tfds}:{self.split}"

    def to_dict(self):
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None or value == field.default:
                continue
            if field.name == "tasks":
                value = {
                    t: list(c) if isinstance(c, tuple) else c for t, c in value.items()
                }
            elif field.name == "column_names":
                value = list(value)
            elif field.name == "label_map":
                value = {t: dict(m) for t, m in value.items()}
            out[field.name] = value
        if "tasks" not in out:
            out["tasks"] = {}
        return out


def _parse_source_tasks(tasks, where, task_names):
    if isinstance(tasks, (list, tuple)):
        tasks = {name: name for name in tasks}
    if not isinstance(tasks, dict) or not tasks:
        raise ConfigError(
            f"{where}: `tasks` must map task names to columns (e.g. "
            "`{sst2: label}`) or list task names that are also column names."
        )
    parsed = {}
    for task, column in tasks.items():
        if task not in task_names:
            raise ConfigError(
                f"{where}: task {task!r} is not one of the config's tasks "
                f"({', '.join(task_names)}).{_did_you_mean(task, task_names)} "
                "Add it under `tasks:` or fix the name."
            )
        if isinstance(column, (list, tuple)):
            column = tuple(str(c) for c in column)
        elif not isinstance(column, (str, int)) or isinstance(column, bool):
            raise ConfigError(
                f"{where}: the column of task {task!r} must be a name or an "
                f"index, got {column!r}."
            )
        parsed[task] = column
    return parsed


def _parse_label_map(label_map, where, source_tasks):
    if not isinstance(label_map, dict):
        raise ConfigError(f"{where}: label_map must map task names to mappings.")
    parsed = {}
    for task, mapping in label_map.items():
        if task not in source_tasks:
            raise ConfigError(
                f"{where}: label_map for task {task!r}, which this source does "
                f"not carry (it carries {', '.join(source_tasks)})."
            )
        if not isinstance(mapping, dict):
            raise ConfigError(
                f"{where}: label_map[{task!r}] must map raw values to labels, "
                f"e.g. {{1: World, 2: Sports}}."
            )
        # File cells are strings, so raw values are matched as strings.
        parsed[task] = {str(k): v for k, v in mapping.items()}
    return parsed


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training and evaluation sources.

    Args:
        train: sources of the training data.
        dev: sources of the evaluation data (each task's dev split).
        empty_text: `keep` or `error` for empty texts.
        download: let tfds download and prepare datasets that are not in
            its data directory yet (off by default: fail at once instead).
    """

    train: tuple = ()
    dev: tuple = ()
    empty_text: str = "keep"
    download: bool = False

    @classmethod
    def parse(cls, mapping, where, task_names):
        _check_keys(mapping, cls, where, required=("train", "dev"))
        values = dict(mapping)
        for split in ("train", "dev"):
            sources = values[split]
            if isinstance(sources, dict):
                sources = [sources]
            if not isinstance(sources, (list, tuple)) or not sources:
                raise ConfigError(f"{where}.{split} must be a list of sources.")
            values[split] = tuple(
                SourceConfig.parse(s, f"{where}.{split}[{i}]", task_names)
                for i, s in enumerate(sources)
            )
            provided = {t for s in values[split] for t in s.tasks}
            for name in task_names:
                if name not in provided:
                    raise ConfigError(
                        f"Task {name!r} has no {split} source: add a source under "
                        f"{where}.{split} whose `tasks` maps {name!r} to a column."
                    )
        if values.get("empty_text", "keep") not in ("keep", "error"):
            raise ConfigError(
                f"{where}.empty_text must be 'keep' or 'error', got "
                f"{values['empty_text']!r}."
            )
        if "download" in values:
            _check_type(values["download"], bool, where, "download")
        return cls(**values)

    def to_dict(self):
        return {
            "train": [s.to_dict() for s in self.train],
            "dev": [s.to_dict() for s in self.dev],
            "empty_text": self.empty_text,
            "download": self.download,
        }


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The shared encoder's size; unset fields come from the `size` preset.

    Args:
        size: `tiny`, `small` or `base` (see `MODEL_SIZES`).
        vocabulary_size: the most WordPiece tokens to learn.
        sequence_length: the longest input in tokens (longer ones are cut).
        hidden_dim, num_layers, num_heads, intermediate_dim, dropout,
            pooling: see `mtl_keras.EncoderConfig`.
        lowercase: case-fold texts before tokenizing.
    """

    size: str = "tiny"
    vocabulary_size: int = None
    sequence_length: int = None
    hidden_dim: int = None
    num_layers: int = None
    num_heads: int = None
    intermediate_dim: int = None
    dropout: float = None
    pooling: str = "mean"
    lowercase: bool = True

    def __post_init__(self):
        if self.size not in MODEL_SIZES:
            raise ConfigError(
                f"model.size must be one of {', '.join(MODEL_SIZES)}, got "
                f"{self.size!r}.{_did_you_mean(self.size, MODEL_SIZES)}"
            )
        for key, default in MODEL_SIZES[self.size].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, default)
        for key in (
            "vocabulary_size",
            "sequence_length",
            "hidden_dim",
            "num_layers",
            "num_heads",
        ):
            _positive_int(getattr(self, key), "model", key)
        if self.intermediate_dim is None:
            object.__setattr__(self, "intermediate_dim", 4 * self.hidden_dim)
        _positive_int(self.intermediate_dim, "model", "intermediate_dim")
        if self.sequence_length < 4:
            raise ConfigError("model: sequence_length must be >= 4.")
        _check_type(self.dropout, (int, float), "model", "dropout")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model: dropout must be in [0, 1), got {self.dropout}.")
        if self.pooling not in POOLING_MODES:
            raise ConfigError(
                f"model: pooling must be one of {', '.join(POOLING_MODES)}, got "
                f"{self.pooling!r}."
            )
        if self.hidden_dim % self.num_heads:
            raise ConfigError(
                f"model: hidden_dim ({self.hidden_dim}) must be divisible by "
                f"num_heads ({self.num_heads})."
            )
        _check_type(self.lowercase, bool, "model", "lowercase")

    @classmethod
    def parse(cls, mapping, where):
        _check_keys(mapping, cls, where)
        return cls(**mapping)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How training sources are combined.

    Args:
        name: `joint` (all rows of all sources, one pass per epoch), or a
            mixing sampler of `mtl_keras.data`: `proportional`,
            `temperature`, `uniform`, `annealed`.
        temperature: for `temperature`; larger is closer to uniform.
    """

    name: str = "joint"
    temperature: float = 2.0

    def __post_init__(self):
        if self.name not in SAMPLER_NAMES:
            raise ConfigError(
                f"sampler must be one of {', '.join(SAMPLER_NAMES)}, got "
                f"{self.name!r}.{_did_you_mean(self.name, SAMPLER_NAMES)}"
            )
        _check_type(self.temperature, (int, float), "sampler", "temperature")
        if not self.temperature > 0:
            raise ConfigError(
                f"sampler: temperature must be > 0, got {self.temperature}."
            )

    @classmethod
    def parse(cls, value, where):
        if isinstance(value, str):
            return cls(name=value)
        _check_keys(value, cls, where)
        return cls(**value)

    def to_dict(self):
        if self.name != "temperature":
            return self.name
        return {"name": self.name, "temperature": self.temperature}


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How long and how fast to train.

    Args:
        epochs: passes over the training data (see the sampler).
        batch_size: examples per batch.
        learning_rate: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_fraction: share of the steps with a linear warm-up; after it
            the rate decays to 0 with a cosine (0 and `schedule: constant`
            keep it flat).
        schedule: `cosine` or `constant`.
        seed: seeds weights, dropout and shuffling.
        steps_per_execution: training steps per compiled call.
        checkpoint: keep the best weights (lowest `val_loss`) in
            `checkpoints/best.weights.h5` of the run directory.
        backup: resume an interrupted run from `backup/` (`BackupAndRestore`).
    """

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.0
    schedule: str = "constant"
    seed: int = 0
    steps_per_execution: int = 1
    checkpoint: bool = False
    backup: bool = False

    def __post_init__(self):
        for key in ("epochs", "batch_size", "steps_per_execution"):
            _positive_int(getattr(self, key), "training", key)
        _check_type(self.seed, int, "training", "seed")
        for key in ("learning_rate", "weight_decay", "warmup_fraction"):
            _check_type(getattr(self, key), (int, float), "training", key)
        if not self.learning_rate > 0:
            raise ConfigError("training: learning_rate must be > 0.")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError("training: warmup_fraction must be in [0, 1).")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(
                f"training: schedule must be 'constant' or 'cosine', got "
                f"{self.schedule!r}."
            )
        for key in ("checkpoint", "backup"):
            _check_type(getattr(self, key), bool, "training", key)

    @classmethod
    def parse(cls, mapping, where):
        _check_keys(mapping, cls, where)
        return cls(**mapping)

    def to_dict(self):
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------
# The run config.


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs. Build it with `load_config` or `parse_config`.

    Args:
        tasks: the `Task`s.
        data: a `DataConfig`.
        data_root: the directory relative `file` paths start from (absolute
            once parsed); `None` when every source is tfds.
        model: a `ModelConfig`.
        precision: `float32`, `mixed_float16`, `mixed_bfloat16` or `auto`.
        sampler: a `SamplerConfig`.
        training: a `TrainingConfig`.
        source: where the config was read from (not part of the config).
    """

    tasks: tuple
    data: DataConfig
    data_root: str = None
    model: ModelConfig = ModelConfig()
    precision: str = "auto"
    sampler: SamplerConfig = SamplerConfig()
    training: TrainingConfig = TrainingConfig()
    source: str = dataclasses.field(default=None, compare=False)

    def path_of(self, source):
        """The absolute path of a file source."""
        path = Path(os.path.expanduser(source.file))
        if not path.is_absolute() and self.data_root is not None:
            path = Path(self.data_root) / path
        return path.resolve()

    def check_files(self):
        """Raises `ConfigError` naming every missing file and its tasks."""
        missing = []
        for split, sources in (("train", self.data.train), ("dev", self.data.dev)):
            for i, source in enumerate(sources):
                if source.file is None:
                    continue
                path = self.path_of(source)
                if not path.is_file():
                    plural = "s" if len(source.tasks) > 1 else ""
                    missing.append(
                        f"{path} (data.{split}[{i}], task{plural} "
                        f"{', '.join(source.tasks)})"
                    )
        if not missing:
            return
        where = "" if self.source is None else f" of config {self.source}"
        files = "Data file " if len(missing) == 1 else "Data files "
        raise ConfigError(
            f"{files}{'; '.join(missing)}{where} "
            f"{'does' if len(missing) == 1 else 'do'} not exist. Fix the `file` "
            f"path{'s' if len(missing) > 1 else ''} or the data root: relative "
            f"paths start at data_root, now {self.data_root} (set it in the "
            "config or with --data-root)."
        )

    def encoder_config(self, vocabulary_size=None):
        """The `EncoderConfig` of the model, for a learned vocabulary's size."""
        m = self.model
        return EncoderConfig(
            vocabulary_size=vocabulary_size or m.vocabulary_size,
            sequence_length=m.sequence_length,
            hidden_dim=m.hidden_dim,
            num_layers=m.num_layers,
            num_heads=m.num_heads,
            intermediate_dim=m.intermediate_dim,
            dropout=m.dropout,
            pooling=m.pooling,
        )

    def resolved(self):
        """This config with `precision: auto` replaced by the policy it picks."""
        return dataclasses.replace(self, precision=resolve_precision(self.precision))

    def replace(self, *, epochs=None, precision=None, data_root=None, **training):
        """A copy with CLI-style overrides (None leaves a value unchanged)."""
        config = self
        if precision is not None:
            if precision not in PRECISIONS:
                raise ConfigError(
                    f"precision must be one of {', '.join(PRECISIONS)}, got "
                    f"{precision!r}.{_did_you_mean(precision, PRECISIONS)}"
                )
            config = dataclasses.replace(config, precision=precision)
        if data_root is not None:
            config = dataclasses.replace(config, data_root=_resolve_root(data_root))
        updates = {k: v for k, v in training.items() if v is not None}
        if epochs is not None:
            updates["epochs"] = epochs
        if updates:
            try:
                training_config = dataclasses.replace(config.training, **updates)
            except TypeError as error:
                raise ConfigError(f"training: {error}") from None
            config = dataclasses.replace(config, training=training_config)
        return config

    def to_dict(self):
        """Plain data (for YAML/JSON); `parse_config` of it gives this config."""
        return {
            "tasks": [_task_dict(t) for t in self.tasks],
            "data_root": self.data_root,
            "data": self.data.to_dict(),
            "model": self.model.to_dict(),
            "precision": self.precision,
            "sampler": self.sampler.to_dict(),
            "training": self.training.to_dict(),
        }

    def to_yaml(self):
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def _task_dict(task):
    config = task.get_config()
    if task.kind in ("binary", "regression"):
        config.pop("num_classes")
    if config["label_names"] is None:
        config.pop("label_names")
    if config["loss_weight"] == 1.0:
        config.pop("loss_weight")
    return config


_TOP_KEYS = [f.name for f in dataclasses.fields(RunConfig) if f.name != "source"]


def _parse_task(mapping, where):
    valid = [f.name for f in dataclasses.fields(Task)]
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(valid)}.")
    for key in mapping:
        if key not in valid:
            raise ConfigError(
                f"Unknown key {key!r} in {where}. Valid keys: "
                f"{', '.join(valid)}.{_did_you_mean(key, valid)}"
            )
    for key in ("name", "kind"):
        if key not in mapping:
            raise ConfigError(
                f"{where} needs a {key!r}. Valid keys: {', '.join(valid)}."
            )
    kind = mapping["kind"]
    if kind not in KINDS:
        raise ConfigError(
            f"{where} ({mapping['name']!r}): unknown task kind {kind!r}. Use one "
            f"of: {', '.join(KINDS)}.{_did_you_mean(kind, KINDS)}"
        )
    try:
        return Task(**mapping)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def _resolve_root(root):
    if root is None:
        return str(Path.cwd())
    if root == BUNDLED:
        return str(Path(__file__).resolve().parents[1] / "data")
    return str(Path(os.path.expanduser(str(root))).resolve())


def parse_config(mapping, *, source=None, data_root=None, check_files=True):
    """Builds a `RunConfig` from plain data (what YAML or JSON gives).

    Args:
        mapping: the config as a dict.
        source: where it came from, for messages.
        data_root: overrides the config's `data_root`.
        check_files: fail now if a data file does not exist.
    """
    where = "the config" if source is None else f"config {source}"
    if not isinstance(mapping, dict):
        raise ConfigError(
            f"{where} must be a mapping with keys {', '.join(_TOP_KEYS)}, got "
            f"{type(mapping).__name__}."
        )
    for key in mapping:
        if key not in _TOP_KEYS:
            raise ConfigError(
                f"Unknown key {key!r} at the top level of {where}. Valid keys: "
                f"{', '.join(_TOP_KEYS)}.{_did_you_mean(key, _TOP_KEYS)}"
            )
    for key in ("tasks", "data"):
        if key not in mapping:
            raise ConfigError(f"{where} has no {key!r} section.")
    tasks = mapping["tasks"]
    if not isinstance(tasks, (list, tuple)) or not tasks:
        raise ConfigError(f"`tasks` in {where} must be a non-empty list of tasks.")
    tasks = tuple(_parse_task(t, f"tasks[{i}]") for i, t in enumerate(tasks))
    names = [t.name for t in tasks]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"Task name {name!r} is used twice in `tasks`.")
    data = DataConfig.parse(mapping["data"], "data", names)
    has_files = any(s.file is not None for s in (*data.train, *data.dev))
    root = data_root if data_root is not None else mapping.get("data_root")
    root = _resolve_root(root) if has_files or root is not None else None
    precision = mapping.get("precision", "auto")
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision must be one of {', '.join(PRECISIONS)}, got "
            f"{precision!r}.{_did_you_mean(precision, PRECISIONS)}"
        )
    try:
        config = RunConfig(
            tasks=tasks,
            data=data,
            data_root=root,
            model=ModelConfig.parse(mapping.get("model") or {}, "model"),
            precision=precision,
            sampler=SamplerConfig.parse(mapping.get("sampler") or "joint", "sampler"),
            training=TrainingConfig.parse(mapping.get("training") or {}, "training"),
            source=None if source is None else str(source),
        )
    except TypeError as error:  # e.g. a value of the wrong type
        raise ConfigError(f"{where}: {error}") from None
    if check_files:
        config.check_files()
    return config


def read_config_file(path):
    """The plain data of a YAML (`yaml.safe_load`) or JSON config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"Config file {path} does not exist. Shipped configs: "
            f"{', '.join(str(p) for p in shipped_configs())}."
        )
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(
            f"Config file {path} is not valid {path.suffix[1:].upper()}: {error}"
        ) from None


def load_config(
    path=None, *, data_root=None, epochs=None, precision=None, check_files=True
):
    """Loads a run config from a YAML or JSON file (default: the bundled sample).

    `path` may also be the name of a shipped config (`sample`,
    `glue_agnews_files`, ...). `data_root`, `epochs` and `precision`
    override the file's values.
    """
    if path is None:
        path = DEFAULT_CONFIG
    elif not Path(path).exists() and (CONFIG_DIR / f"{path}.yaml").is_file():
        path = CONFIG_DIR / f"{path}.yaml"
    mapping = read_config_file(path)
    try:
        config = parse_config(
            mapping, source=path, data_root=data_root, check_files=False
        ).replace(epochs=epochs, precision=precision)
        if check_files:
            config.check_files()
    except ConfigError as error:
        message = str(error)
        if str(path) not in message:
            message = f"{message} (config {path})"
        raise ConfigError(message) from None
    return config


def shipped_configs():
    """The config files that come with the package."""
    return sorted(CONFIG_DIR.glob("*.yaml"))


def resolve_precision(precision):
    """`auto` → `mixed_float16` on a GPU, `mixed_bfloat16` on TPU or CPU."""
    if precision != "auto":
        return precision
    import tensorflow as tf

    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16"
