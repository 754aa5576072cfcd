"""Checking plain config data against the constructors it is for.

`check_keys(section, target, where)` compares a config section with the
keyword arguments of what it builds: unknown keys (with a did-you-mean),
missing keys and values whose type differs from the default's are reported
as a `ConfigError` naming where they are. `build(target, section, where)`
calls the constructor, whose own validation then speaks, prefixed with
where. The `check_*` functions apply them to each section of a run config.
"""

import difflib
import inspect

from mtl_keras import data as data_lib
from mtl_keras import weighting as weighting_lib
from mtl_keras.backbone import SharedEncoder, check_encoder_arguments
from mtl_keras.config_files import ConfigError  # noqa: F401 (re-exported)
from mtl_keras.preprocess import TextPreprocessor, check_packing

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")
JOINT = "joint"


def did_you_mean(word, choices):
    """did_you_mean.

    Example:
    >>> did_you_mean("epoch", ["epochs", "seed"])
    " Did you mean 'epochs'?"
    """
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _type_of_default(default):
    if isinstance(default, bool):
        return (bool,), "true or false"
    if isinstance(default, int):
        return (int,), "an integer"
    if isinstance(default, float):
        return (int, float), "a number"
    if isinstance(default, str):  # a string, or a column given by its index
        return (str, int), "a string or an integer"
    return None, None


def check_keys(mapping, targets, where, exclude=(), required=()):
    """Checks a section against the keyword arguments of `targets`.

    Unknown keys, missing required keys and values whose type differs from
    the argument's default's type raise `ConfigError` naming `where`.

    Example:
    >>> def train(epochs=3, batch_size=32, learning_rate=1e-3): ...
    >>> check_keys({"epochs": 2}, train, "training")
    {'epochs': 2}
    >>> check_keys({"epoch": 2}, train, "training")
    Traceback (most recent call last):
    ...
    mtl_keras.config_files.ConfigError: Unknown key 'epoch' in training. Valid keys: epochs, batch_size, learning_rate. Did you mean 'epochs'?
    >>> check_keys({"batch_size": "64"}, train, "training")
    Traceback (most recent call last):
    ...
    mtl_keras.config_files.ConfigError: training: batch_size must be an integer, got '64'.
    """
    if not isinstance(mapping, dict):
        raise ConfigError(
            f"{where} must be a mapping of keys to values, got "
            f"{type(mapping).__name__} {mapping!r}."
        )
    parameters = {}
    for target in targets if isinstance(targets, (list, tuple)) else [targets]:
        for name, p in inspect.signature(target).parameters.items():
            if name in ("self", "cls", *exclude) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            parameters.setdefault(name, p)
    valid = list(parameters)
    for key, value in mapping.items():
        if key not in parameters:
            raise ConfigError(
                f"Unknown key {key!r} in {where}. Valid keys: "
                f"{', '.join(valid)}.{did_you_mean(key, valid)}"
            )
        types, names = _type_of_default(parameters[key].default)
        wrong_bool = isinstance(value, bool) and types and bool not in types
        if types and value is not None and (wrong_bool or not isinstance(value, types)):
            raise ConfigError(f"{where}: {key} must be {names}, got {value!r}.")
    without_default = [n for n, p in parameters.items() if p.default is p.empty]
    for key in (*without_default, *required):
        if key not in mapping:
            raise ConfigError(f"{where} needs the key {key!r}. Valid keys: {', '.join(valid)}.")
    return dict(mapping)


def build(target, mapping, where, **extra):
    """`target(**mapping, **extra)`, its ValueError or TypeError as a `ConfigError`.

    Example:
    >>> from mtl_keras.tasks import Task
    >>> build(Task, {"name": "t", "kind": "ranking"}, "tasks[0]")
    Traceback (most recent call last):
    ...
    mtl_keras.config_files.ConfigError: tasks[0]: Task 't': unknown kind 'ranking'; expected one of multiclass, binary, multilabel, regression, tagging.
    """
    try:
        return target(**mapping, **extra)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def source_class(entry, where):
    """source_class.

    Example:
    >>> source_class({"tfds": "glue/sst2", "split": "train"}, "data.train[0]").__name__
    'TfdsSource'
    """
    if not isinstance(entry, dict) or ("file" in entry) == ("tfds" in entry):
        raise ConfigError(
            f"{where} needs exactly one of `file` (a local file) or `tfds` "
            "(a TensorFlow Datasets name)."
        )
    return data_lib.FileSource if "file" in entry else data_lib.TfdsSource


def check_source(entry, where, task_names):
    """check_source.

    Example:
    >>> check_source({"file": "a.tsv", "tasks": ["topik"]}, "data.train[0]", ["topic"])
    Traceback (most recent call last):
    ...
    mtl_keras.config_files.ConfigError: data.train[0]: task 'topik' is not one of the config's tasks (topic). Did you mean 'topic'? Add it under `tasks:` or fix the name.
    """
    cls = source_class(entry, where)
    check_keys(entry, cls, where, required=("tasks",))
    tasks = entry["tasks"]
    names = list(tasks) if isinstance(tasks, (list, tuple, dict)) else []
    for name in names:
        if name not in task_names:
            raise ConfigError(
                f"{where}: task {name!r} is not one of the config's tasks "
                f"({', '.join(task_names)}).{did_you_mean(name, task_names)} "
                "Add it under `tasks:` or fix the name."
            )
    build(cls, entry, where)  # the constructor validates the values
    return entry


def sampler_parts(sampler):
    """sampler_parts.

    Example:
    >>> sampler_parts({"name": "temperature", "temperature": 3})
    ('temperature', {'temperature': 3})
    """
    if isinstance(sampler, str):
        return sampler, {}
    if isinstance(sampler, dict) and "name" in sampler:
        return sampler["name"], {k: v for k, v in sampler.items() if k != "name"}
    raise ConfigError(
        f"sampler must be a name or a mapping with a `name`, got {sampler!r}."
    )


def check_sampler(sampler):
    """check_sampler.

    Example:
    >>> check_sampler("proportionnal")
    Traceback (most recent call last):
    ...
    mtl_keras.config_files.ConfigError: sampler must be one of joint, proportional, temperature, uniform, annealed, got 'proportionnal'. Did you mean 'proportional'?
    """
    name, kwargs = sampler_parts(sampler)
    choices = (JOINT, *data_lib.SAMPLERS)
    if name not in choices:
        raise ConfigError(
            f"sampler must be one of {', '.join(choices)}, got {name!r}."
            + did_you_mean(name, choices)
        )
    if name != JOINT:
        check_keys(kwargs, data_lib.SAMPLERS[name], "sampler")
        build(data_lib.SAMPLERS[name], kwargs, "sampler")
    return sampler


def check_weighting(spec):
    """check_weighting: a method name or `{method: name, **arguments}`.

    Example:
    >>> check_weighting({"method": "cagrad", "alpha": 0.4})
    {'method': 'cagrad', 'alpha': 0.4}
    >>> check_weighting({"method": "famo", "learning_rate": 0.1})
    Traceback (most recent call last):
    ...
    mtl_keras.config_files.ConfigError: Unknown key 'learning_rate' in weighting. Valid keys: logit_learning_rate, logit_decay, epsilon. Did you mean 'logit_learning_rate'?
    """
    name, kwargs = weighting_lib.method_parts(spec)
    if name not in weighting_lib.METHODS:
        choices = list(weighting_lib.METHODS)
        raise ConfigError(
            f"weighting must be one of {', '.join(choices)}, got {name!r}."
            + did_you_mean(name, choices)
        )
    target = weighting_lib.METHODS[name]
    build(target, check_keys(kwargs, target, "weighting", exclude=("kwargs",)), "weighting")
    return spec


def check_precision(precision):
    """check_precision.

    Example:
    >>> check_precision("mixed_bfloat16")
    'mixed_bfloat16'
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision must be one of {', '.join(PRECISIONS)}, got "
            f"{precision!r}.{did_you_mean(precision, PRECISIONS)}"
        )
    return precision


def resolve_precision(precision):
    """`auto` → `mixed_float16` on a GPU, `mixed_bfloat16` on TPU or CPU.

    Example:
    >>> resolve_precision("float32")
    'float32'
    >>> resolve_precision("auto") in ("mixed_bfloat16", "mixed_float16")
    True
    """
    if check_precision(precision) != "auto":
        return precision
    import tensorflow as tf

    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16"


def check_model_sections(mapping):
    """check_model_sections.

    Example:
    >>> check_model_sections({"preprocessor": {"sequence_length": 64}, "encoder": {"num_layers": 1}})
    ({'sequence_length': 64}, {'num_layers': 1})
    """
    encoder = dict(mapping.get("encoder") or {})
    preprocessor = dict(mapping.get("preprocessor") or {})
    derived = ("vocabulary_size", "sequence_length", "dtype", "name", "trainable")
    if "preset" in encoder:
        from mtl_keras.pretrained import PretrainedEncoder, preprocessor_from_preset

        check_keys(encoder, [PretrainedEncoder.from_preset, PretrainedEncoder], "encoder",
                   exclude=("backbone", "dtype", "name", "trainable"))
        check_keys(preprocessor, preprocessor_from_preset, "preprocessor",
                   exclude=("preset", "pair", "tokenizer"))
    else:
        check_keys(encoder, SharedEncoder, "encoder", exclude=derived)
        check_keys(preprocessor, TextPreprocessor.from_texts, "preprocessor",
                   exclude=("texts", "pair"))
        learning = [k for k in ("vocabulary_size", "min_count") if k in preprocessor]
        if preprocessor.get("vocabulary") is not None and learning:
            raise ConfigError(
                f"preprocessor: vocabulary ({preprocessor['vocabulary']}) is used as it "
                f"is, so {' and '.join(learning)} would do nothing: remove "
                f"{'them' if len(learning) > 1 else 'it'}, or the vocabulary to learn one."
            )
        if not isinstance(preprocessor.get("vocabulary") or "", str):
            raise ConfigError(
                "preprocessor: vocabulary must be the path of a file with one token "
                f"per line, got {preprocessor['vocabulary']!r}."
            )
        defaults = {"hidden_dim": 64, "num_layers": 2, "num_heads": 2}
        build(check_encoder_arguments, {**defaults, **encoder}, "encoder")
    packing = {k: v for k, v in preprocessor.items() if k in ("sequence_length", "truncate")}
    build(check_packing, {"sequence_length": 128, **packing}, "preprocessor")
    return preprocessor, encoder

def columns(tasks):
    """A source entry's `tasks` as `{task: column}` (a list means column = task).

    Example:
    >>> columns(["topic", "sentiment"])
    {'topic': 'topic', 'sentiment': 'sentiment'}
    """
    return {name: name for name in tasks} if isinstance(tasks, (list, tuple)) else dict(tasks)


def plain(value):
    """Tuples turned into lists, recursively (what YAML and JSON hold).

    Example:
    >>> plain({"names": ("a", "b")})
    {'names': ['a', 'b']}
    """
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def check_split(entries, split, task_names):
    """Checks the sources of `data.<split>`; every task needs one (`test` too, if given).

    Example:
    >>> check_split([{"file": "t.tsv", "tasks": ["topic"]}], "dev", ["topic", "rating"])
    Traceback (most recent call last):
    ...
    mtl_keras.config_files.ConfigError: Task 'rating' has no dev source: add a source under data.dev whose `tasks` maps 'rating' to a column.
    """
    entries = entries if isinstance(entries, (list, tuple)) else [entries]
    checked = tuple(
        plain(check_source(e, f"data.{split}[{i}]", task_names)) for i, e in enumerate(entries)
    )
    provided = {t for e in checked for t in columns(e["tasks"])}
    for name in task_names:
        if name not in provided:
            raise ConfigError(
                f"Task {name!r} has no {split} source: add a source under "
                f"data.{split} whose `tasks` maps {name!r} to a column."
            )
    return checked


def check_data(data, target, task_names, where):
    """Checks the `data` section: its sources, and `dev` or `split` (not both).

    Example:
    >>> def section(train=(), dev=(), test=(), empty_text="keep", split=None): ...
    >>> train = [{"file": "t.tsv", "tasks": ["topic"]}]
    >>> check_data({"train": train, "split": {"seed": 3}}, section, ["topic"], "the config")
    Traceback (most recent call last):
    ...
    mtl_keras.config_files.ConfigError: data.split needs the key 'dev_fraction'. Valid keys: dev_fraction, seed.
    >>> check_data({"train": train}, section, ["topic"], "the config")
    Traceback (most recent call last):
    ...
    mtl_keras.config_files.ConfigError: data in the config needs dev sources (data.dev) or split: {dev_fraction: 0.1, seed: 0}, which takes seeded, stratified dev rows from the training sources.
    """
    data = check_keys(data, target, "data", required=("train",))
    if data.get("split") is not None:  # dev rows from the training sources
        if data.get("dev"):
            raise ConfigError(
                "data: give either dev sources or split: {dev_fraction, seed}, not "
                f"both (data.dev lists {len(data['dev'])} source(s)). Remove data.dev "
                "to take the dev rows from the training sources, or data.split."
            )
        split = check_keys(data["split"], data_lib.DevSplit, "data.split")
        data["split"] = build(data_lib.DevSplit, split, "data.split")
    elif "dev" not in data:
        raise ConfigError(
            f"data in {where} needs dev sources (data.dev) or split: {{dev_fraction: "
            "0.1, seed: 0}, which takes seeded, stratified dev rows from the "
            "training sources."
        )
    for split in ("train", "dev", "test"):  # test is optional; if given, it covers every task
        if data.get(split) or split == "train" or (split == "dev" and not data.get("split")):
            data[split] = check_split(data[split], split, task_names)
    data["dev"], data["test"] = data.get("dev") or (), data.get("test") or ()
    return data
