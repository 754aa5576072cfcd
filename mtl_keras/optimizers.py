"""Optimizers for multi-task fine-tuning."""

import logging

import keras

from mtl_keras import _compat

logger = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="mtl_keras")
class EncoderAdamW(_compat.PerVariableRateHooks, keras.optimizers.AdamW):
    """AdamW with a separate learning rate for the shared encoder.

    Encoder variables are updated with `learning_rate *
    encoder_learning_rate_multiplier` (and weight-decayed at that rate), the
    other variables (heads, learned loss weights) with `learning_rate`.
    Scaling gradients would not do this: Adam is invariant to the scale of
    the gradient. A schedule given as `learning_rate` shapes both rates.

    Adam's bias correction counts, for the encoder variables, the steps since
    they first received a gradient, so an encoder that is unfrozen after N
    steps (`UnfreezeEncoder`) starts with properly corrected moments instead
    of updates up to ~6x too large for its first hundreds of steps.

    `MultiTaskModel.compile(encoder_learning_rate=...)` creates one and tells
    it which variables are the encoder's (`set_encoder_variables`, before
    the optimizer is built). The multiplier is part of the config, so
    `.keras` files restore it; the variable assignment is redone by
    `compile`.

    Args:
        learning_rate: a float or a schedule: the heads' rate.
        encoder_learning_rate_multiplier: the encoder's rate relative to it.
        **kwargs: for `keras.optimizers.AdamW`.

    Example:
    >>> import numpy as np
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> texts = ["a good film", "a bad film"]
    >>> preprocessor = TextPreprocessor.from_texts(texts, vocabulary_size=20,
    ...                                            sequence_length=8)
    >>> encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8,
    ...                                          num_layers=1, num_heads=2)
    >>> model = MultiTaskModel([Task("positive", "binary")], encoder, preprocessor)
    >>> model.compile(learning_rate=1e-3, encoder_learning_rate=1e-4)
    >>> type(model.optimizer).__name__, model.optimizer.encoder_learning_rate_multiplier
    ('EncoderAdamW', 0.1)

    With a schedule (it shapes both rates), pass the optimizer; `compile`
    declares the encoder's variables:

    >>> schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=100)
    >>> optimizer = EncoderAdamW(schedule, encoder_learning_rate_multiplier=0.1)
    >>> model.compile(optimizer=optimizer)
    >>> history = model.fit(preprocessor(texts), {"positive": np.array([1., 0.])},
    ...                     verbose=0)
    >>> int(optimizer.encoder_start_step)  # the step the encoder started training
    0
    """

    def __init__(
        self, learning_rate=0.001, encoder_learning_rate_multiplier=1.0, **kwargs
    ):
        super().__init__(learning_rate=learning_rate, **kwargs)
        if not encoder_learning_rate_multiplier >= 0:
            raise ValueError(
                "encoder_learning_rate_multiplier must be >= 0, got "
                f"{encoder_learning_rate_multiplier!r}."
            )
        self.encoder_learning_rate_multiplier = float(encoder_learning_rate_multiplier)
        self._encoder_keys = frozenset()

    def set_encoder_variables(self, variables):
        """Declares which variables get the encoder's rate; call before `build`.

        `MultiTaskModel.compile` calls it with `model.encoder.weights`; call
        it yourself to use an `EncoderAdamW` outside `MultiTaskModel`.

        Example:
        >>> import numpy as np
        >>> encoder, head = keras.layers.Dense(2), keras.layers.Dense(1)
        >>> model = keras.Sequential([keras.Input((3,)), encoder, head])
        >>> optimizer = EncoderAdamW(1e-2, encoder_learning_rate_multiplier=0.0)
        >>> optimizer.set_encoder_variables(encoder.weights)
        >>> model.compile(optimizer=optimizer, loss="mse")
        >>> before = encoder.get_weights()
        >>> history = model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0)
        >>> all((a == b).all() for a, b in zip(before, encoder.get_weights()))
        True
        """
        if self.built:
            raise RuntimeError(
                "set_encoder_variables() must be called before the optimizer is built."
            )
        self._encoder_keys = frozenset(self.variable_key(v) for v in variables)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        if var_list and not self._encoder_keys:
            logger.warning(
                "EncoderAdamW was built without set_encoder_variables(): every "
                "variable gets the heads' learning rate."
            )
        # The optimizer step at which the encoder first got a gradient; -1 before.
        self.encoder_start_step = self.add_variable(
            (),
            initializer=keras.initializers.Constant(-1),
            dtype="int64",
            aggregation="only_first_replica",
            name="encoder_start_step",
        )

    def _is_encoder(self, variable):
        return self.variable_key(variable) in self._encoder_keys

    def variable_rate_factor(self, variable):
        return self.encoder_learning_rate_multiplier if self._is_encoder(variable) else 1.0

    def before_update(self, variables):
        if any(self._is_encoder(v) for v in variables):
            start = keras.ops.cast(self.encoder_start_step, "int64")
            now = keras.ops.cast(self.iterations, "int64")
            self.encoder_start_step.assign(keras.ops.where(start < 0, now, start))

    def update_step(self, gradient, variable, learning_rate):
        if self._is_encoder(variable):
            dtype = variable.dtype
            # Adam's step size is lr * sqrt(1 - b2^t) / (1 - b1^t) at step t;
            # rescale it so that t counts the encoder's own steps.
            t = keras.ops.cast(self.iterations + 1, dtype)
            t_encoder = t - keras.ops.cast(self.encoder_start_step, dtype)
            b1 = keras.ops.cast(self.beta_1, dtype)
            b2 = keras.ops.cast(self.beta_2, dtype)

            def correction(step):
                return keras.ops.sqrt(1 - b2**step) / (1 - b1**step)

            learning_rate = (
                keras.ops.cast(learning_rate, dtype)
                * self.encoder_learning_rate_multiplier
                * correction(t_encoder)
                / correction(t)
            )
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["encoder_learning_rate_multiplier"] = (
            self.encoder_learning_rate_multiplier
        )
        return config
