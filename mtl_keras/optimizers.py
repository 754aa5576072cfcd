"""Optimizers for multi-task fine-tuning."""

import logging

import keras

logger = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="mtl_keras")
class EncoderAdamW(keras.optimizers.AdamW):
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
    >>> model.compile(learning_rate=1e-3, encoder_learning_rate=5e-5)  # doctest: +SKIP
    >>> type(model.optimizer).__name__  # doctest: +SKIP
    'EncoderAdamW'
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
        self._lr_factor = 1.0  # set while tracing the encoder's weight decay

    def set_encoder_variables(self, variables):
        """Declares which variables get the encoder's rate; call before `build`."""
        if self.built:
            raise RuntimeError(
                "set_encoder_variables() must be called before the optimizer is built."
            )
        self._encoder_keys = frozenset(self._var_key(v) for v in variables)

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
        return self._var_key(variable) in self._encoder_keys

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if any(self._is_encoder(v) for v in trainable_variables):
            start = keras.ops.cast(self.encoder_start_step, "int64")
            now = keras.ops.cast(self.iterations, "int64")
            self.encoder_start_step.assign(keras.ops.where(start < 0, now, start))
        super()._backend_update_step(grads, trainable_variables, learning_rate)

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

    def _apply_weight_decay(self, variables):
        encoder = [v for v in variables if self._is_encoder(v)]
        others = [v for v in variables if not self._is_encoder(v)]
        super()._apply_weight_decay(others)
        if encoder:
            self._lr_factor = self.encoder_learning_rate_multiplier
            try:
                super()._apply_weight_decay(encoder)
            finally:
                self._lr_factor = 1.0

    def _get_current_learning_rate(self):
        learning_rate = super()._get_current_learning_rate()
        if self._lr_factor != 1.0:
            return learning_rate * self._lr_factor
        return learning_rate

    def get_config(self):
        config = super().get_config()
        config["encoder_learning_rate_multiplier"] = (
            self.encoder_learning_rate_multiplier
        )
        return config
