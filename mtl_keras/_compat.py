"""Every use of a private Keras or keras-hub API, in one place.

Public APIs do not cover a few things this package needs; each use below
says why. `PRIVATE_API` lists what is relied on, and `tests/test_compat.py`
checks every entry (that it exists, with the parameters used), so a Keras
upgrade that changes one fails a test instead of silently changing
behaviour. No other module touches a private Keras attribute.
"""


import keras
import keras_hub
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as _tf_trainer

# (owner, attribute, parameters used): checked by tests/test_compat.py.
PRIVATE_API = (
    (keras.Model, "_maybe_symbolic_build", ("iterator", "data_batch")),
    (keras.optimizers.Optimizer, "_var_key", ("variable",)),
    (
        keras.optimizers.Optimizer,
        "_backend_update_step",
        ("grads", "trainable_variables", "learning_rate"),
    ),
    (keras.optimizers.Optimizer, "_apply_weight_decay", ("variables",)),
    (keras.optimizers.Optimizer, "_get_current_learning_rate", ()),
    (keras.metrics.F1Score, "_build", ("y_true_shape", "y_pred_shape")),
    (_tf_trainer, "_collective_all_reduce_multi_worker", ("strategy",)),
    (tf.__internal__.distribute, "strategy_supports_no_merge_call", ()),
)
# Instance attributes relied on (set in `__init__`, so not on the class).
PRIVATE_INSTANCE_ATTRIBUTES = (
    (keras.layers.Layer, ("_convert_input_args", "_allow_non_tensor_positional_args")),
    (keras.export.ExportArchive, ("_tf_trackable",)),
    (keras.Model, ("_initial_epoch",)),
)

# keras-hub preprocessing layers run a Python (non-TensorFlow) code path on
# eager calls; this keyword (read by their base class) keeps them on the
# TensorFlow ops, the same in tf.data, eagerly and in a SavedModel.
TENSORFLOW_ONLY = {"_allow_python_workflow": False}
TENSORFLOW_ONLY_LAYERS = (
    keras_hub.tokenizers.WordPieceTokenizer,
    keras_hub.layers.StartEndPacker,
    keras_hub.layers.MultiSegmentPacker,
)


def tensor_outputs():
    """A scope in which keras-hub layers return their tensors when eager.

    Eagerly, keras-hub's `preprocessing_function` wrapper hands ragged
    results back as Python lists of lists (`convert_preprocessing_outputs`);
    turning those back into a `tf.RaggedTensor` costs seconds per thousand
    texts. Inside its private `no_convert_scope` the layers' own tensors are
    returned, as in `tf.data` and in a SavedModel.
    """
    from keras_hub.src.utils.tensor_utils import no_convert_scope

    return no_convert_scope()


def accept_strings(layer):
    """Lets a Keras layer take Python strings and lists as inputs.

    Keras converts positional inputs to backend tensors (not strings) and
    refuses non-tensor positional arguments otherwise.
    """
    layer._convert_input_args = False
    layer._allow_non_tensor_positional_args = True


def build_f1_variables(metric, num_classes):
    """Creates an `F1Score`'s variables now, not lazily inside a replica's step."""
    metric._build((None, num_classes), (None, num_classes))


def initial_epoch(model, initial_epoch=0):
    """The epoch `fit` would start at: the one a `BackupAndRestore` restored.

    `BackupAndRestore.on_train_begin` records it in `model._initial_epoch`;
    `fit` reads it there, so the explicit loop does the same.
    """
    return model._initial_epoch or initial_epoch


def attach_asset(archive, name, path):
    """Adds a file to an `ExportArchive`'s `assets/` (no public API for it)."""
    setattr(archive._tf_trackable, name, tf.saved_model.Asset(path))


def update_is_a_merge_call():
    """Whether the current strategy's variable updates go through `merge_call`.

    They do under `MirroredStrategy` and `MultiWorkerMirroredStrategy` except
    in XLA on GPUs; a `tf.cond` in replica context cannot hold such an update
    (`MultiTaskModel.apply_if_finite` then decides in cross-replica context,
    as Keras's `LossScaleOptimizer` does, with the same TensorFlow check).
    """
    return not tf.__internal__.distribute.strategy_supports_no_merge_call()


def reducible_logs(logs, strategy):
    """A step's logs in a shape Keras can reduce across workers.

    Keras 3 reduces the logs of a multi-worker collective strategy with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalars
    every step returns ("Invalid reduction dimension 0 for input with 0
    dimensions", tensorflow/tensorflow#72388). A `[1]` tensor reduces to the
    scalar: the mean over the replicas of values that are the same on each
    (the model's logs are global). Elsewhere the logs are unchanged.
    """
    if not _tf_trainer._collective_all_reduce_multi_worker(strategy):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


class PrebuiltFunctionalModel(keras.Model):
    """A functional model that skips Keras' symbolic build before training.

    Under a tf.distribute strategy, Keras builds a model by averaging a
    sample batch across replicas, which fails on bool padding masks. A
    functional model is built at construction; if it compiles no Keras
    losses or metrics only the optimizer is left to build, which the
    subclass does in `_build_optimizer`.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self.built and self.optimizer is not None:
            self._build_optimizer()
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


class PerVariableRateHooks:
    """Mixin for a Keras optimizer whose variables have their own rates.

    Keras applies one learning rate to every variable, and its public
    `update_step` does not see weight decay. The subclass implements
    `variable_rate_factor(variable)` and `before_update(variables)`; this
    mixin calls them from the private hooks where the rate is applied.
    """

    _rate_factor = 1.0  # set while tracing the weight decay of a group

    def variable_key(self, variable):
        return self._var_key(variable)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        self.before_update(trainable_variables)
        super()._backend_update_step(grads, trainable_variables, learning_rate)

    def _apply_weight_decay(self, variables):
        groups = {}
        for variable in variables:
            groups.setdefault(self.variable_rate_factor(variable), []).append(variable)
        for factor, group in groups.items():
            self._rate_factor = factor
            try:
                super()._apply_weight_decay(group)
            finally:
                self._rate_factor = 1.0

    def _get_current_learning_rate(self):
        learning_rate = super()._get_current_learning_rate()
        if self._rate_factor != 1.0:
            return learning_rate * self._rate_factor
        return learning_rate


def word_piece_vocabulary(texts, vocabulary_size, lowercase, reserved_tokens, min_count):
    """`keras_hub.tokenizers.compute_word_piece_vocabulary` with a minimum word count.

    keras-hub's function calls the tensorflow-text learner with its default
    `lower_thresh=10` (a word seen fewer than 10 times gets no token of its
    own) and has no argument for it, and tf.data converts its mapped lambda
    with AutoGraph (1.2 s of the default run). This repeats its two steps
    (keras-hub's private `pretokenize`, unconverted, then the public
    learner); `tests/test_preprocess.py` checks that the vocabulary equals
    keras-hub's at `min_count=10`.
    """
    from keras_hub.src.tokenizers.word_piece_tokenizer import pretokenize
    from tensorflow_text.tools.wordpiece_vocab import (
        wordpiece_tokenizer_learner_lib as learner,
    )

    words = texts.map(
        tf.autograph.experimental.do_not_convert(
            lambda text: pretokenize(text, lowercase, False, True, True)
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    vocabulary = learner.learn(
        learner.count_words(words), vocab_size=vocabulary_size,
        reserved_tokens=list(reserved_tokens), lower_thresh=min_count,
        include_joiner_token=True, joiner="##",
    )  # fmt: skip
    return vocabulary[:vocabulary_size]
