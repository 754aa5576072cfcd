import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from mtl_keras.config import (
    DEFAULT_CONFIG,
    ConfigError,
    load_config,
    parse_config,
    resolve_precision,
    shipped_configs,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def sample_mapping():
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def parse(mapping, **kwargs):
    kwargs.setdefault("check_files", False)
    return parse_config(mapping, **kwargs)


def error_of(mapping, **kwargs):
    with pytest.raises(ConfigError) as info:
        parse(mapping, **kwargs)
    return str(info.value)


def test_default_config_is_the_bundled_sample():
    config = load_config()
    assert [t.name for t in config.tasks] == ["topic", "sentiment", "rating", "aspects", "mentions"]
    assert [t.kind for t in config.tasks] == ["multiclass", "binary", "regression", "multilabel", "tagging"]
    assert config.tasks[0].label_names == ("sports", "politics", "tech", "food")
    train = config.path_of(config.data.train[0])
    assert train.is_file() and train.parts[-4:] == ("data", "bundled", "sample", "train.tsv")
    assert config.data.train[0]["tasks"] == ["topic", "sentiment", "rating", "aspects", "mentions"]
    assert config.sampler == "joint" and config.sampler_object() is None
    (source,) = config.sources("train")
    assert source.tasks == {n: n for n in ("topic", "sentiment", "rating", "aspects", "mentions")}


@pytest.mark.parametrize(
    "where, edit, key",
    [
        ("top level", lambda m: m.update(epochs=3), "epochs"),
        ("encoder", lambda m: m["encoder"].update(hiden_dim=8), "hiden_dim"),
        ("preprocessor", lambda m: m["preprocessor"].update(seq_len=8), "seq_len"),
        ("training", lambda m: m["training"].update(lr=0.1), "lr"),
        ("data", lambda m: m["data"].update(validation=[]), "validation"),
        ("data.train[0]", lambda m: m["data"]["train"][0].update(colum="x"), "colum"),
        ("tasks[1]", lambda m: m["tasks"][1].update(weight=2.0), "weight"),
        (
            "sampler",
            lambda m: m.update(sampler={"name": "temperature", "temp": 2}),
            "temp",
        ),
    ],
)
def test_unknown_key_names_the_key_where_and_the_valid_keys(where, edit, key):
    mapping = sample_mapping()
    edit(mapping)
    message = error_of(mapping)
    assert f"Unknown key {key!r}" in message
    assert where in message
    assert "Valid keys:" in message


def test_unknown_key_lists_valid_keys_and_suggests_one():
    mapping = sample_mapping()
    mapping["encoder"]["hiden_dim"] = 8
    message = error_of(mapping)
    for valid in ("hidden_dim", "num_layers", "num_heads", "dropout", "pooling"):
        assert valid in message
    assert "Did you mean 'hidden_dim'?" in message


def test_unknown_task_kind():
    mapping = sample_mapping()
    mapping["tasks"][1]["kind"] = "binarry"
    message = error_of(mapping)
    assert "unknown kind 'binarry'" in message
    assert "tasks[1]" in message and "'sentiment'" in message
    assert "multiclass, binary, multilabel, regression, tagging" in message
    assert "Did you mean 'binary'?" in message


def test_missing_file_names_the_path_and_the_task(tmp_path):
    mapping = sample_mapping()
    mapping["data"]["dev"] = [
        {"file": "sample/dev.tsv", "tasks": ["topic", "sentiment", "aspects", "mentions"]},
        {"file": "elsewhere/ratings.tsv", "tasks": {"rating": "stars"}},
    ]
    with pytest.raises(ConfigError) as info:
        parse_config(mapping, data_root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "elsewhere" / "ratings.tsv") in message
    assert "data.dev[1]" in message and "task rating" in message
    assert "--data-root" in message
    # Found once the root is right.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "ratings.tsv").write_text("text\tstars\n")
    (tmp_path / "sample").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "sample" / name).write_text("text\ttopic\n")
    assert parse_config(mapping, data_root=tmp_path).data_root == str(tmp_path)


@pytest.mark.parametrize(
    "edit, words",
    [
        (
            lambda m: m["data"]["train"][0].update(tasks={"topik": "topic"}),
            ["'topik'", "not one of the config's tasks", "Did you mean 'topic'?"],
        ),
        (
            lambda m: m["data"]["dev"][0].update(tasks=["topic", "sentiment"]),
            ["'rating' has no dev source"],
        ),
        (
            lambda m: m["data"]["train"][0].update(tfds="glue/sst2"),
            ["exactly one of `file`", "`tfds`"],
        ),
        (
            lambda m: m["data"]["train"].append(
                {"tfds": "glue/sst2", "tasks": ["topic"]}
            ),
            ["needs the key 'split'"],
        ),
        (lambda m: m["encoder"].update(hidden_dim="32"), ["hidden_dim", "integer"]),
        (lambda m: m["encoder"].update(hidden_dim=30, num_heads=4), ["divisible"]),
        (lambda m: m["encoder"].update(pooling="max"), ["encoder", "pooling"]),
        (lambda m: m["encoder"].update(vocabulary_size=9), ["Unknown key 'vocabulary_size'"]),
        (lambda m: m["preprocessor"].update(sequence_length=1), ["preprocessor", "too short"]),
        (lambda m: m["preprocessor"].update(truncate="left"), ["truncate must be one of"]),
        (lambda m: m["training"].update(epochs=0), ["epochs must be >= 1"]),
        (lambda m: m["training"].update(schedule="linear"), ["schedule must be one of"]),
        (lambda m: m["data"]["train"][0].update(quoting="double"), ["data.train[0]", "quoting"]),
        (lambda m: m["data"]["train"][0].update(max_rows=0), ["data.train[0]", "max_rows"]),
        (lambda m: m.update(sampler={"name": "temperature", "temperature": -1}), ["temperature must be > 0"]),
        (lambda m: m.update(precision="fp16"), ["float32, mixed_float16"]),
        (lambda m: m.update(sampler="proportionnal"), ["Did you mean 'proportional'?"]),
        (
            lambda m: m["tasks"].append({"name": "topic", "kind": "binary"}),
            ["used twice"],
        ),
        (lambda m: m["tasks"][0].update(num_classes=1), ["num_classes >= 2"]),
    ],
)
def test_bad_values_say_what_to_fix(edit, words):
    mapping = sample_mapping()
    edit(mapping)
    message = error_of(mapping)
    for word in words:
        assert word in message


def test_yaml_and_json_give_the_same_config(tmp_path):
    mapping = sample_mapping()
    (tmp_path / "run.json").write_text(json.dumps(mapping))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(mapping))
    from_json = load_config(tmp_path / "run.json")
    from_yaml = load_config(tmp_path / "run.yaml")
    assert from_json == from_yaml == load_config()


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("tasks: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_resolved_config_round_trips(tmp_path):
    config = load_config(epochs=2, precision="auto").resolved()
    assert config.precision in ("mixed_bfloat16", "mixed_float16")
    assert config.training.epochs == 2
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    again = load_config(path)
    assert again == config
    assert again.to_dict() == config.to_dict()
    assert again.to_dict()["training"]["seed"] == 0  # the run record spells it out


def test_overrides():
    config = load_config(
        epochs=7, precision="float32", data_root="/somewhere", check_files=False
    )
    assert config.training.epochs == 7
    assert config.precision == "float32"
    assert config.data_root == "/somewhere"
    with pytest.raises(ConfigError, match="precision"):
        load_config(precision="half")


def test_set_assignments_change_any_key_and_are_checked_like_the_file():
    config = load_config(check_files=False, seed=4, overrides=[
        "training.learning_rate=1e-3", "encoder.hidden_dim=8", "data.train.0.max_rows=50",
        "weighting={method: dwa, period_steps: 4}", "training.checkpoint=false",
    ])  # fmt: skip
    assert config.training.learning_rate == 0.001  # "1e-3" is a float, not YAML 1.1's string
    assert (config.training.seed, config.encoder["hidden_dim"]) == (4, 8)
    assert config.data.train[0]["max_rows"] == 50
    assert config.weighting == {"method": "dwa", "period_steps": 4}
    assert config.training.checkpoint is False
    # The checker's own messages, as for a file that says the same.
    with pytest.raises(ConfigError, match="Unknown key 'epoch' in training.*Did you mean 'epochs'"):
        load_config(check_files=False, overrides=["training.epoch=3"])
    with pytest.raises(ConfigError, match="epochs must be an integer, got 'three'"):
        load_config(check_files=False, overrides=["training.epochs=three"])
    # Assignments that name no place say so.
    for bad, words in [
        ("training", "expected section.key=value"),
        ("=3", "expected section.key=value"),
        ("data.train.7.file=x", "'data.train.7' is not an index of a list of 1"),
        ("encoder.hidden_dim.x=1", "'x' is inside 32, which is not a section"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            load_config(check_files=False, overrides=[bad])


def test_sections_build_what_they_name():
    """Each section's keys are the arguments of the object it builds."""
    from mtl_keras import SharedEncoder, TextPreprocessor

    config = load_config()
    preprocessor = config.build_preprocessor(["the game was great", "the vote was close"])
    assert isinstance(preprocessor, TextPreprocessor)
    assert preprocessor.sequence_length == config.preprocessor["sequence_length"] == 32
    encoder = config.build_encoder(preprocessor, "float32")
    assert isinstance(encoder, SharedEncoder)
    assert encoder.hidden_dim == config.encoder["hidden_dim"] == 32
    assert encoder.vocabulary_size == preprocessor.vocabulary_size
    mapping = sample_mapping()
    del mapping["encoder"]  # the constructors' defaults apply
    assert parse(mapping).build_encoder(preprocessor, "float32").hidden_dim == 64


def test_a_preset_encoder_takes_the_presets_tokenizer_keys():
    mapping = sample_mapping()
    mapping["encoder"] = {"preset": "some/dir", "pooling": "first"}
    mapping["preprocessor"] = {"sequence_length": 64}
    config = parse(mapping)
    assert config.preset == "some/dir"
    mapping["preprocessor"] = {"sequence_length": 64, "vocabulary_size": 100}
    assert "Unknown key 'vocabulary_size' in preprocessor" in error_of(mapping)
    mapping["preprocessor"] = {}
    mapping["encoder"]["hidden_dim"] = 8
    assert "Unknown key 'hidden_dim' in encoder" in error_of(mapping)


def test_source_shorthands_and_label_maps():
    mapping = sample_mapping()
    mapping["data"]["train"][0]["label_map"] = {"topic": {1: "sports", 2: "food"}}
    config = parse(mapping)
    assert config.data.train[0]["label_map"] == {"topic": {1: "sports", 2: "food"}}
    (source,) = config.sources("train")
    assert source.label_map == {"topic": {1: "sports", 2: "food"}}
    mapping["data"]["train"][0]["label_map"] = {"rating_x": {1: 2}}
    assert "rating_x" in error_of(mapping)
    mapping["data"]["train"][0].pop("label_map")
    mapping["data"]["train"][0]["text"] = 0  # a column index is fine too
    assert parse(mapping).data.train[0]["text"] == 0


def test_sampler_forms():
    mapping = sample_mapping()
    mapping["sampler"] = {"name": "temperature", "temperature": 3.0}
    config = parse(mapping)
    assert config.sampler_object().temperature == 3.0
    assert parse(config.to_dict()) == config
    mapping["sampler"] = "annealed"
    assert type(parse(mapping).sampler_object()).__name__ == "Annealed"


def test_resolve_precision():
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("auto") in ("mixed_bfloat16", "mixed_float16")


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    config = load_config(path, check_files=False)
    assert config.tasks and config.data.train and config.data.dev
    assert parse(config.to_dict()) == config
    assert yaml.safe_load(config.to_yaml()) == config.to_dict()
    if config.data_root and "shared" in path.read_text():
        if SHARED_DATA.is_dir():
            load_config(path, data_root=SHARED_DATA)  # every file exists


def test_shipped_config_names():
    names = {p.stem for p in shipped_configs()}
    assert {"sample", "glue_agnews_files", "glue_agnews_tfds", "goemotions", "glue_agnews_minilm"} <= names
    assert load_config("goemotions", check_files=False).tasks[0].num_classes == 28


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such/config.yaml")


def test_config_is_frozen():
    config = load_config()
    with pytest.raises(AttributeError):
        config.precision = "float32"
    copy.deepcopy(config)


def test_mixture_of_per_task_sources_prepares_a_training_stream():
    from mtl_keras.pipeline import read_data

    mapping = sample_mapping()
    mapping["data"]["train"] = [
        {"file": "sample/train.tsv", "tasks": ["topic"], "max_rows": 300},
        {"file": "sample/train.tsv", "tasks": ["sentiment", "rating", "aspects", "mentions"], "max_rows": 100},
    ]
    mapping["sampler"] = {"name": "temperature", "temperature": 2.0}
    data = read_data(parse(mapping, check_files=True))
    assert 300 < data.examples_per_epoch < 400  # rows with a label of their tasks
    names = [s.name for s in data.train_sources]
    assert len(set(names)) == 2  # repeated file names are made unique
    features, labels, masks = next(iter(data.rows.epoch_dataset(0)))
    assert set(masks) == {"topic", "sentiment", "rating", "aspects", "mentions"}
    assert features["text"].dtype.name == "string"


def test_with_tasks_keeps_only_their_sources_and_columns():
    config = load_config("glue_agnews_files", check_files=False)
    single = config.with_tasks(["ag_news"])
    assert [t.name for t in single.tasks] == ["ag_news"]
    assert [s["file"] for s in single.data.train] == ["ag_news/train_sample_10k.tsv"]
    assert single.data.train[0]["label_map"] == config.data.train[2]["label_map"]
    assert single.sampler == "joint"
    assert single.encoder == config.encoder and single.training == config.training
