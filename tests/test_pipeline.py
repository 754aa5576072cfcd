"""`fit_run`, the one pipeline: epochs, budgets, strategies, callbacks, run files."""

import keras
import numpy as np
import pytest
import yaml
from tiny_config import write_tiny_config
from toy_problem import two_replica_strategy

from mtl_keras.config import load_config, parse_config, read_config_file
from mtl_keras.data import validate
from mtl_keras.pipeline import fit_run, read_data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_config(write_tiny_config(tmp_path_factory.mktemp("tiny"), epochs=2, batch_size=64))


def test_epochs_of_joint_rows_keep_the_history_in_memory(tiny, tmp_path):
    epochs = []
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epochs.append(epoch))
    result = fit_run(tiny, callbacks=[callback], run_dir=tmp_path, verbose=0)
    assert epochs == [0, 1]
    assert len(result.history["loss"]) == 2 and "val_topic_mcc" in result.history
    assert result.compute["examples"] == 2 * result.examples_per_epoch
    assert result.compute["steps"] == 2 * -(-result.examples_per_epoch // 64)
    assert (tmp_path / "history.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert result.model.preprocessor.sequence_length == tiny.preprocessor["sequence_length"]
    dev = validate(tiny.tasks, read_data(tiny).dev_sources, split="evaluation")
    for task in tiny.tasks:
        assert result.metrics[task.name]["examples"] > 300
        if task.kind != "tagging":  # one evaluation pass; each task's rows in file order
            expected = np.concatenate(
                [t.labels[task.name][t.masks[task.name] > 0] for t in dev]
            )
            np.testing.assert_array_equal(result.predictions[task.name]["labels"], expected)


def test_a_mixture_trains_each_epoch_on_its_own_examples(tiny):
    mapping = yaml.safe_load(tiny.to_yaml())
    mapping["data"]["train"] = [
        {"file": "sample/train.tsv", "tasks": ["topic"], "max_rows": 200},
        {"file": "sample/train.tsv", "tasks": ["sentiment", "rating", "aspects", "mentions"], "max_rows": 60},
    ]
    mapping["sampler"] = {"name": "temperature", "temperature": 2.0}
    config = parse_config(mapping)
    steps = []
    count = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: steps.append(int(result_model_steps()))
    )
    holder = {}

    def result_model_steps():
        return holder["model"].train_step_counter.numpy()

    class Hold(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            holder["model"] = self.model

    result = fit_run(config, callbacks=[Hold(), count], verbose=0)
    per_epoch = -(-result.examples_per_epoch // 64)
    assert steps == [per_epoch, 2 * per_epoch]  # every epoch ends where it should
    assert result.compute["examples"] == 2 * result.examples_per_epoch


def test_a_budget_trains_the_first_examples_in_one_pass(tiny):
    result = fit_run(tiny, examples=150, verbose=0, with_predictions=False)
    assert result.compute["examples"] == 150 and result.compute["steps"] == 3
    assert len(result.history["loss"]) == 1 and result.predictions == {}


def test_a_strategy_builds_and_trains_the_model_in_its_scope(tiny):
    strategy = two_replica_strategy()
    result = fit_run(tiny, examples=128, strategy=strategy, verbose=0)
    assert result.model.distribute_strategy is strategy
    assert result.compute["examples"] == 128
    dev = read_data(tiny).dev_sources[0].read(tiny.tasks)
    for task in tiny.tasks:  # evaluation counts every dev example once across replicas
        assert result.metrics[task.name]["examples"] == int(dev.masks[task.name].sum())
        if task.kind != "tagging":  # one prediction per example, not one per replica
            assert len(result.predictions[task.name]["labels"]) == result.metrics[task.name]["examples"]


def test_a_preset_encoder_trains_from_the_config_alone(tiny, tmp_path):
    """`encoder: {preset: DIR}` (here a tiny keras-hub BERT preset saved by the
    test; `preset: minilm` for the README's run) builds the backbone and the
    preset's tokenizer, and trains through the same pipeline."""
    import keras_hub

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "was", "great", "bad"]
    preset = tmp_path / "bert"
    keras_hub.models.BertBackbone(
        vocabulary_size=len(vocab), num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=24,
    ).save_to_preset(preset)  # fmt: skip
    keras_hub.models.BertTokenizer(vocab, lowercase=True).save_to_preset(preset)
    mapping = yaml.safe_load(tiny.to_yaml())
    mapping["encoder"] = {"preset": str(preset), "pooling": "first"}
    mapping["preprocessor"] = {"sequence_length": 24}
    mapping["training"].update(epochs=1, encoder_learning_rate=1e-4)
    result = fit_run(parse_config(mapping), verbose=0)
    assert type(result.model.encoder).__name__ == "PretrainedEncoder"
    assert result.model.preprocessor.tokenizer.get_vocabulary() == vocab
    assert type(result.model.optimizer).__name__ == "EncoderAdamW"
    assert set(result.metrics) == {t.name for t in tiny.tasks}


def test_the_shipped_minilm_config_is_the_readme_run():
    config = load_config("glue_agnews_minilm", check_files=False)
    assert config.encoder == {"preset": "minilm", "pooling": "first"}
    assert config.preprocessor == {"sequence_length": 64}
    assert config.training.encoder_learning_rate == 1e-4 and config.training.epochs == 2
    assert config.sampler_object().temperature == 2.0
    assert read_config_file(config.source)["precision"] == "mixed_bfloat16"
