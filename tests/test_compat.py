"""Each private Keras / keras-hub API that `mtl_keras._compat` relies on still exists.

A Keras upgrade that renames or re-signs one of them fails here, naming it,
instead of silently changing what mtl_keras computes.
"""

import inspect

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import _compat
from mtl_keras.metrics import LogitF1Score
from mtl_keras.optimizers import EncoderAdamW


@pytest.mark.parametrize(
    "owner, name, parameters",
    _compat.PRIVATE_API,
    ids=[f"{o.__name__}.{n}" for o, n, _ in _compat.PRIVATE_API],
)
def test_private_method_exists_with_the_parameters_used(owner, name, parameters):
    function = getattr(owner, name, None)
    assert callable(function), f"{owner.__name__}.{name} is gone"
    found = inspect.signature(function).parameters
    for parameter in parameters:
        assert parameter in found, f"{owner.__name__}.{name} lost {parameter!r}"


def _instance(owner):
    if owner is keras.Model:
        return keras.Sequential([keras.layers.Dense(1)])
    if owner is keras.layers.Layer:
        return keras.layers.Dense(1)
    return owner()


@pytest.mark.parametrize(
    "owner, names",
    _compat.PRIVATE_INSTANCE_ATTRIBUTES,
    ids=[o.__name__ for o, _ in _compat.PRIVATE_INSTANCE_ATTRIBUTES],
)
def test_private_instance_attributes_exist(owner, names):
    instance = _instance(owner)
    for name in names:
        assert hasattr(instance, name), f"{owner.__name__}().{name} is gone"


@pytest.mark.parametrize("layer_class", _compat.TENSORFLOW_ONLY_LAYERS, ids=lambda c: c.__name__)
def test_keras_hub_layers_take_the_tensorflow_only_keyword(layer_class):
    arguments = {"vocabulary": ["[PAD]", "[UNK]", "a"]} if "Tokenizer" in layer_class.__name__ else {
        "sequence_length": 4, "start_value": 1, "end_value": 2}
    layer = layer_class(**arguments, **_compat.TENSORFLOW_ONLY)
    assert layer._allow_python_workflow is False


def test_accept_strings_lets_a_layer_take_python_strings():
    class Upper(keras.layers.Layer):
        def call(self, texts):
            return [t.upper() for t in texts]

    layer = Upper()
    _compat.accept_strings(layer)
    assert layer(["ab", "c"]) == ["AB", "C"]


def test_f1_variables_exist_before_the_first_update():
    metric = LogitF1Score(3)
    assert metric.variables and all(v.shape[-1] == 3 for v in metric.variables[:3])


def test_initial_epoch_is_the_restored_one():
    model = keras.Sequential([keras.layers.Dense(1)])
    assert _compat.initial_epoch(model, 2) == 2
    model._initial_epoch = 5  # what BackupAndRestore.on_train_begin sets
    assert _compat.initial_epoch(model, 2) == 5


def test_per_variable_rates_reach_the_update_and_the_weight_decay():
    """EncoderAdamW through the hooks: the encoder variable moves 10x less."""
    encoder, head = keras.Variable(np.ones(3, "float32")), keras.Variable(np.ones(3, "float32"))
    optimizer = EncoderAdamW(0.1, encoder_learning_rate_multiplier=0.1, weight_decay=0.5)
    optimizer.set_encoder_variables([encoder])
    optimizer.build([encoder, head])
    gradient = np.ones(3, "float32")
    optimizer.apply_gradients([(gradient, encoder), (gradient, head)])
    moved_encoder = 1.0 - float(encoder.numpy()[0])
    moved_head = 1.0 - float(head.numpy()[0])
    # Adam's first step is lr * sign(g); weight decay is lr * wd * w, both scaled.
    assert moved_head == pytest.approx(0.1 + 0.1 * 0.5, rel=1e-4)
    assert moved_encoder == pytest.approx(0.01 + 0.01 * 0.5, rel=1e-3)


def test_word_piece_vocabulary_min_count_gives_rarer_words_a_token():
    from mtl_keras.preprocess import learn_vocabulary

    texts = ["zebra grazes"] * 3 + ["the cat sat on the mat"] * 12
    default = learn_vocabulary(texts, 200)
    rarer = learn_vocabulary(texts, 200, min_count=2)
    assert "zebra" not in default and "the" in default
    assert "zebra" in rarer and "the" in rarer
    assert rarer[:5] == default[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_word_piece_vocabulary_equals_keras_hubs_at_its_minimum_count():
    # `_compat.word_piece_vocabulary` repeats keras-hub's two steps with a
    # `min_count`; at keras-hub's fixed 10 it must learn the same vocabulary.
    from mtl_keras.config import load_config
    from mtl_keras.preprocess import RESERVED_TOKENS, clean_text
    from mtl_keras.run_data import read_data, training_texts

    sample = training_texts(read_data(load_config()).tables)
    texts = tf.data.Dataset.from_tensor_slices(sample).map(clean_text)
    for size in (300, 2000):
        ours = _compat.word_piece_vocabulary(texts.batch(64), size, True, RESERVED_TOKENS, 10)
        theirs = keras_hub.tokenizers.compute_word_piece_vocabulary(
            texts, size, lowercase=True, reserved_tokens=RESERVED_TOKENS)
        assert ours == theirs and len(ours) > 100


def test_keras_hub_layers_return_tensors_inside_tensor_outputs():
    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(["[UNK]", "a", "b"], **_compat.TENSORFLOW_ONLY)
    texts = tf.constant(["a b", "b"])
    assert isinstance(tokenizer(texts), list)  # keras-hub's eager conversion
    with _compat.tensor_outputs():
        tokens = tokenizer(texts)
    assert isinstance(tokens, tf.RaggedTensor) and tokens.to_list() == [[1, 2], [2]]
    assert isinstance(tokenizer(texts), list)  # only inside the scope
