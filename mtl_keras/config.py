"""Run configuration: each section holds the keyword arguments of what it builds.

    tasks:          # each entry: Task(**entry)
      - {name: topic, kind: multiclass, num_classes: 4}
    data_root: ../shared/data   # base of relative `file` paths (`bundled`: data/)
    data:           # DataConfig(**data)
      train:        # each entry: FileSource(**entry) (`file:`) or TfdsSource(**entry) (`tfds:`)
        - {file: sst2/train.tsv, text: sentence, tasks: {sst2: label}}
      dev: [...]    # and optionally test: [...], for `mtl-keras evaluate RUN --split test`
      # or, instead of dev: split: {dev_fraction: 0.1, seed: 0} (DevSplit: a seeded,
      # stratified share of each training source; see mtl_keras.data.split)
    preprocessor:   # TextPreprocessor.from_texts(train texts, **preprocessor)
      {vocabulary_size: 8000, sequence_length: 128, min_count: 10}
      # or {vocabulary: FILE, ...}: that vocabulary (a path from data_root), not learned
    encoder:        # SharedEncoder(**encoder), sized for the preprocessor
      {hidden_dim: 128, num_layers: 2, num_heads: 4}
                    # or {preset: DIR, ...}: PretrainedEncoder.from_preset(**encoder),
                    # whose tokenizer then makes the preprocessor
    precision: auto # float32 | mixed_float16 | mixed_bfloat16 | auto
    sampler: joint  # joint, or a mixing sampler's name, or {name: temperature, temperature: 2}
    weighting: static  # a method of mtl_keras.weighting, or {method: cagrad, alpha: 0.4}
    training:       # Training(**training)
      {epochs: 3, batch_size: 32, learning_rate: 0.001, seed: 0}

`config_checks.check_keys` compares every section with the signature of what it
builds (unknown keys with a did-you-mean, missing ones, wrong types); values are
checked once, by the constructors or their argument checks, at load time.
"""

import dataclasses
import os
from pathlib import Path

import yaml

from mtl_keras import data as data_lib
from mtl_keras.backbone import SharedEncoder
from mtl_keras.config_checks import (
    JOINT,
    ConfigError,
    build,
    check_data,
    check_keys,
    check_model_sections,
    check_precision,
    check_sampler,
    check_weighting,
    columns,
    did_you_mean,
    plain,
    resolve_precision,
    sampler_parts,
    source_class,
)
from mtl_keras.config_files import (  # noqa: F401 (CONFIG_DIR, DEFAULT_CONFIG: re-exported)
    CONFIG_DIR,
    DEFAULT_CONFIG,
    config_path,
    read_config_file,
    shipped_configs,
)
from mtl_keras.data_report import OVERLAP_POLICIES
from mtl_keras.overrides import apply_overrides
from mtl_keras.preprocess import TextPreprocessor, read_vocabulary
from mtl_keras.tasks import Task
from mtl_keras.training_settings import Training

BUNDLED = "bundled"
SPLITS = ("train", "dev", "test")  # data sections; test is evaluated only on request


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training and evaluation sources (each a `FileSource` or `TfdsSource` mapping).

    Args:
        train: the training sources.
        dev: the evaluation sources (each task's dev split).
        test: optional held-out sources, evaluated only on request
            (`mtl-keras evaluate RUN --split test`).
        empty_text: `keep` or `error` for empty texts.
        overlap: what a share of dev texts above `max_overlap` that also
            occur in the training data does (`data_report.check_overlap`):
            `warn` (default), `error` (stop before training) or `ignore`.
        max_overlap: that share (0.01: one dev text in a hundred).
        split: instead of `dev`, a `DevSplit` (or its mapping
            `{dev_fraction, seed}`): dev rows taken from each training source,
            seeded and stratified (`mtl_keras.data.split`).

    Example:
    >>> DataConfig(train=({"file": "train.tsv", "tasks": ["topic"]},), empty_text="drop")
    Traceback (most recent call last):
    ...
    ValueError: empty_text must be one of ('keep', 'error'), got 'drop'.
    >>> DataConfig(train=({"file": "t.tsv", "tasks": ["topic"]},), split={"dev_fraction": 0.2}).split
    DevSplit(dev_fraction=0.2, seed=0)
    """

    train: tuple = ()
    dev: tuple = ()
    test: tuple = ()
    empty_text: str = "keep"
    overlap: str = "warn"
    max_overlap: float = 0.01
    split: object = None

    def __post_init__(self):
        if self.overlap not in OVERLAP_POLICIES:
            raise ValueError(f"overlap must be one of {OVERLAP_POLICIES}, got {self.overlap!r}.")
        if not 0 <= self.max_overlap <= 1:
            raise ValueError(f"max_overlap must be a share in [0, 1], got {self.max_overlap!r}.")
        if self.empty_text not in data_lib.EMPTY_TEXT_POLICIES:
            raise ValueError(
                f"empty_text must be one of {data_lib.EMPTY_TEXT_POLICIES}, "
                f"got {self.empty_text!r}."
            )
        if isinstance(self.split, dict):
            object.__setattr__(self, "split", data_lib.DevSplit(**self.split))
        if self.split is not None and self.dev:
            raise ValueError(
                f"give either dev sources or a split, not both (data.dev lists "
                f"{len(self.dev)} source(s) and data.split is {self.split}): remove "
                "one of them."
            )


# --------------------------------------------------------------------------
# The run config.


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run needs. Build it with `load_config` or `parse_config`.

    Args:
        tasks: the `Task`s.
        data: a `DataConfig`.
        data_root: the directory relative `file` paths start from (absolute).
        preprocessor: arguments of `TextPreprocessor.from_texts` (or, with
            a preset encoder, of `preprocessor_from_preset`).
        encoder: arguments of `SharedEncoder` or, with `preset`, of
            `PretrainedEncoder.from_preset`.
        precision: `float32`, `mixed_float16`, `mixed_bfloat16` or `auto`.
        sampler: `joint`, a sampler name, or `{name: ..., **arguments}`.
        weighting: a method name (`mtl_keras.weighting.METHODS`) or
            `{method: ..., **arguments}`.
        training: a `Training`.
        source: where the config was read from (not part of the config).
        split_rows: with `data.split`, fixed dev rows per training source
            (set by `with_tasks`, so that a config of fewer tasks keeps the
            whole config's dev rows; not part of the config).

    Example:
    >>> config = load_config()
    >>> [source.name for source in config.sources("train")]
    ['sample/train.tsv']
    >>> config.replace(epochs=2).training.epochs
    2
    """

    tasks: tuple
    data: DataConfig
    data_root: str = None
    preprocessor: dict = dataclasses.field(default_factory=dict)
    encoder: dict = dataclasses.field(default_factory=dict)
    precision: str = "auto"
    sampler: object = JOINT
    weighting: object = "static"
    training: Training = Training()
    source: str = dataclasses.field(default=None, compare=False)
    split_rows: tuple = dataclasses.field(default=None, compare=False)

    @property
    def pair(self):
        """Whether the sources hold sentence pairs."""
        return any(s.get("text_pair") is not None for s in (*self.data.train, *self.data.dev))

    @property
    def preset(self):
        return self.encoder.get("preset")

    def path_of(self, entry):
        """The absolute path of a file source's `file`."""
        path = Path(os.path.expanduser(entry["file"]))
        if not path.is_absolute() and self.data_root is not None:
            path = Path(self.data_root) / path
        return path.resolve()

    def sources(self, split):
        """The `FileSource`s / `TfdsSource`s of `split` (`SPLITS`).

        With `data.split`, `train` and `dev` are the two parts of the
        training sources (`data.SplitPart`s; see `train_and_dev`).
        """
        if self.data.split is not None and split in ("train", "dev"):
            return self.train_and_dev()[split == "dev"]
        return self.listed_sources(split)

    def train_and_dev(self, listed=None):
        """`(train sources, dev sources, split record or None)`.

        With `data.split` the training sources (`listed`, default
        `listed_sources("train")`) are read and split (`data.split_sources`);
        the record lists the dev rows.
        """
        listed = listed or self.listed_sources("train")
        if self.data.split is None:
            return listed, self.listed_sources("dev"), None
        return data_lib.split_sources(
            self.tasks, listed, self.data.split,
            empty_text=self.data.empty_text, fixed=self.split_rows,
        )

    def listed_sources(self, split):
        """The sources of the entries of `data.<split>` as listed (before any split)."""
        built, seen = [], {}
        for entry in getattr(self.data, split):
            entry = dict(entry)
            if "file" in entry:
                entry.setdefault("name", entry["file"])
                entry["file"] = self.path_of(entry)
            source = source_class(entry, split)(**entry)
            count = seen[source.name] = seen.get(source.name, 0) + 1
            if count > 1:  # a Mixture needs distinct names
                source.name = f"{source.name}#{count}"
            built.append(source)
        return built

    def sampler_object(self):
        """None for `joint`, else the mixing sampler (`mtl_keras.data`)."""
        name, kwargs = sampler_parts(self.sampler)
        return None if name == JOINT else data_lib.get_sampler(name, **kwargs)

    def build_preprocessor(self, texts):
        """The preprocessor: learned from `texts`, a `vocabulary` file, or the preset's tokenizer."""
        # Tagging tasks label words: the preprocessor then aligns word pieces.
        kwargs = {"align_words": any(t.per_token for t in self.tasks), **self.preprocessor}
        if kwargs.get("vocabulary") is not None:
            kwargs["vocabulary"] = str(self.path_of({"file": kwargs["vocabulary"]}))
        if self.preset is None:
            return TextPreprocessor.from_texts(texts, pair=self.pair, **kwargs)
        from mtl_keras.minilm import resolve_preset
        from mtl_keras.pretrained import preprocessor_from_preset

        return preprocessor_from_preset(
            resolve_preset(self.preset), pair=self.pair, **kwargs
        )

    def build_encoder(self, preprocessor, precision):
        if self.preset is None:
            return SharedEncoder.for_preprocessor(
                preprocessor, dtype=precision, name="encoder", **self.encoder
            )
        from mtl_keras.minilm import resolve_preset
        from mtl_keras.pretrained import PretrainedEncoder

        kwargs = dict(self.encoder, preset=resolve_preset(self.preset))
        return PretrainedEncoder.from_preset(dtype=precision, name="encoder", **kwargs)

    def check_files(self):
        """Raises `ConfigError` naming every missing file and its tasks."""
        missing = []
        for split in SPLITS:
            for i, entry in enumerate(getattr(self.data, split)):
                if "file" in entry and not self.path_of(entry).is_file():
                    tasks = ", ".join(entry["tasks"])
                    missing.append(f"{self.path_of(entry)} (data.{split}[{i}], task {tasks})")
        vocabulary = self.preprocessor.get("vocabulary")
        if vocabulary is not None and not self.path_of({"file": vocabulary}).is_file():
            missing.append(f"{self.path_of({'file': vocabulary})} (preprocessor.vocabulary)")
        elif vocabulary is not None:
            build(read_vocabulary, {"path": self.path_of({"file": vocabulary})}, "preprocessor")
        if missing:
            where = "" if self.source is None else f" of config {self.source}"
            raise ConfigError(
                f"Data file(s) {'; '.join(missing)}{where} do not exist. Fix the "
                f"`file` paths or the data root: relative paths start at "
                f"data_root, now {self.data_root} (set it in the config or with "
                "--data-root)."
            )

    def resolved(self):
        """This config with `precision: auto` replaced by the policy it picks."""
        return dataclasses.replace(self, precision=resolve_precision(self.precision))

    def replace(self, *, precision=None, data_root=None, **training):
        """A copy with CLI-style overrides (None leaves a value unchanged)."""
        config = self
        if precision is not None:
            config = dataclasses.replace(config, precision=check_precision(precision))
        if data_root is not None:
            config = dataclasses.replace(config, data_root=_resolve_root(data_root))
        updates = {k: v for k, v in training.items() if v is not None}
        if updates:
            merged = {**dataclasses.asdict(config.training), **updates}
            config = dataclasses.replace(
                config, training=build(Training, check_keys(merged, Training, "training"), "training")
            )
        return config

    def with_tasks(self, names):
        """The config of `names` alone: their sources and columns, sampler `joint`."""

        def only(entries):
            kept = []
            for entry in entries:
                tasks = columns(entry["tasks"])
                if not set(names) & set(tasks):
                    continue
                entry = dict(entry, tasks={n: c for n, c in tasks.items() if n in names})
                if entry.get("label_map"):
                    entry["label_map"] = {k: v for k, v in entry["label_map"].items() if k in names}
                kept.append(entry)
            return tuple(kept)

        data = dataclasses.replace(
            self.data, **{split: only(getattr(self.data, split)) for split in SPLITS}
        )
        tasks = tuple(t for t in self.tasks if t.name in names)
        config = dataclasses.replace(self, tasks=tasks, data=data, sampler=JOINT)
        if self.data.split is not None and len(tasks) < len(self.tasks):
            # The whole config's dev rows (its stratifying task may be dropped here).
            record = self.train_and_dev()[2]["sources"]
            kept = [record[i] for i, entry in enumerate(self.data.train)
                    if set(names) & set(columns(entry["tasks"]))]
            config = dataclasses.replace(config, split_rows=tuple(kept))
        return config

    def to_dict(self):
        """Plain data (for YAML/JSON); `parse_config` of it gives this config."""
        training = dataclasses.asdict(self.training)
        return {
            "tasks": [_task_dict(t) for t in self.tasks],
            "data_root": self.data_root,
            "data": {
                **{split: [plain(e) for e in getattr(self.data, split)] for split in SPLITS},
                "empty_text": self.data.empty_text,
                "overlap": self.data.overlap,
                "max_overlap": self.data.max_overlap,
                **({} if self.data.split is None
                   else {"split": dataclasses.asdict(self.data.split)}),
            },
            "preprocessor": dict(self.preprocessor),
            "encoder": dict(self.encoder),
            "precision": self.precision,
            "sampler": plain(self.sampler),
            "weighting": plain(self.weighting),
            "training": training,
        }

    def to_yaml(self):
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def _task_dict(task):
    config = task.get_config()
    defaults = {f.name: f.default for f in dataclasses.fields(Task)}
    for key in ("num_classes", "label_names", "loss_weight"):
        if config[key] == defaults[key] or (key == "num_classes" and task.task_kind.single_output):
            config.pop(key)
    return config


_TOP_KEYS = [f.name for f in dataclasses.fields(RunConfig) if f.name not in ("source", "split_rows")]


def _resolve_root(root):
    if root is None:
        return str(Path.cwd())
    if root == BUNDLED:
        return str(data_lib.BUNDLED_DIR)
    return str(Path(os.path.expanduser(str(root))).resolve())


def parse_config(mapping, *, source=None, data_root=None, check_files=True):
    """Builds a `RunConfig` from plain data (what YAML or JSON gives).

    Args:
        mapping: the config as a dict.
        source: where it came from, for messages.
        data_root: overrides the config's `data_root`.
        check_files: fail now if a data file does not exist.

    Example:
    >>> mapping = {"tasks": [{"name": "spam", "kind": "binary"}],
    ...            "data": {"train": [{"file": "t.tsv", "tasks": ["spam"]}],
    ...                     "dev": [{"file": "d.tsv", "tasks": ["spam"]}]},
    ...            "encoder": {"hidden_dim": 16, "num_heads": 3}}
    >>> parse_config(mapping, check_files=False)
    Traceback (most recent call last):
    ...
    mtl_keras.config_files.ConfigError: encoder: hidden_dim (16) must be divisible by num_heads (3).
    """
    where = "the config" if source is None else f"config {source}"
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(_TOP_KEYS)}.")
    for key in mapping:
        if key not in _TOP_KEYS:
            raise ConfigError(
                f"Unknown key {key!r} at the top level of {where}. Valid keys: "
                f"{', '.join(_TOP_KEYS)}.{did_you_mean(key, _TOP_KEYS)}"
            )
    for key in ("tasks", "data"):
        if key not in mapping:
            raise ConfigError(f"{where} has no {key!r} section.")
    entries = mapping["tasks"]
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ConfigError(f"`tasks` in {where} must be a non-empty list of tasks.")
    tasks = []
    for i, entry in enumerate(entries):
        here = f"tasks[{i}]"
        tasks.append(build(Task, check_keys(entry, Task, here, required=("name", "kind")), here))
    names = [t.name for t in tasks]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"Task name {name!r} is used twice in `tasks`.")
    data = build(DataConfig, check_data(mapping["data"], DataConfig, names, where), "data")
    has_files = any("file" in e for e in (*data.train, *data.dev))
    root = data_root if data_root is not None else mapping.get("data_root")
    preprocessor, encoder = check_model_sections(mapping)
    training = mapping.get("training") or {}
    config = RunConfig(
        tasks=tuple(tasks),
        data=data,
        data_root=_resolve_root(root) if has_files or root is not None else None,
        preprocessor=preprocessor,
        encoder=encoder,
        precision=check_precision(mapping.get("precision", "auto")),
        sampler=check_sampler(mapping.get("sampler") or JOINT),
        weighting=check_weighting(mapping.get("weighting") or "static"),
        training=build(Training, check_keys(training, Training, "training"), "training"),
        source=None if source is None else str(source),
    )
    if check_files:
        config.check_files()
    return config


def load_config(path=None, *, data_root=None, precision=None, check_files=True, overrides=(),
                **training):
    """Loads a run config from a YAML or JSON file (default: the bundled sample).

    `path` may also name a shipped config (`sample`, ...). `overrides` (`--set`'s
    `"section.key=value"`) change the file's data before it is checked; then
    `data_root`, `precision` and `training` keys (`epochs=...`) override.

    Example:
    >>> config = load_config("sample", epochs=1, overrides=["encoder.hidden_dim=16"])
    >>> config.training.epochs, config.encoder["hidden_dim"]
    (1, 16)
    """
    path = config_path(path)
    mapping = apply_overrides(read_config_file(path), overrides)
    try:
        config = parse_config(mapping, source=path, data_root=data_root, check_files=False)
        config = config.replace(precision=precision, **training)
        if check_files:
            config.check_files()
    except ConfigError as error:
        message = str(error)
        if str(path) not in message:
            message = f"{message} (config {path})"
        raise ConfigError(message) from None
    return config
