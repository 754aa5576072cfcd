"""The shared encoder: token + position embedding, Transformer blocks, pooling."""

import keras
import keras_hub

POOLING_MODES = ("mean", "first")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def check_encoder_arguments(
    hidden_dim, num_layers, num_heads, intermediate_dim=None, dropout=0.1,
    pooling="mean", dtype="float32", vocabulary_size=1, sequence_length=1,
):
    """Validates `SharedEncoder`'s arguments (also before any data is read).

    Example:
    >>> check_encoder_arguments(hidden_dim=30, num_layers=1, num_heads=4)
    Traceback (most recent call last):
    ...
    ValueError: hidden_dim (30) must be divisible by num_heads (4).
    """
    for name, value in (
        ("vocabulary_size", vocabulary_size),
        ("sequence_length", sequence_length),
        ("hidden_dim", hidden_dim),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
        ("intermediate_dim", 1 if intermediate_dim is None else intermediate_dim),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    if hidden_dim % num_heads:
        raise ValueError(
            f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})."
        )
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
    if pooling not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}.")
    if dtype not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {dtype!r}.")


@keras.saving.register_keras_serializable(package="mtl_keras")
class FirstTokenPooling(keras.layers.Layer):
    """Takes the hidden state of the first token (the start token).

    Example:
    >>> import numpy as np
    >>> FirstTokenPooling()(np.arange(12.0).reshape(1, 3, 4)).numpy().tolist()
    [[0.0, 1.0, 2.0, 3.0]]
    """

    def call(self, inputs):
        return inputs[:, 0, :]


def make_pooler(pooling):
    """The float32 pooling layer of a shared encoder: `"mean"` or `"first"`.

    Example:
    >>> make_pooler("mean").name
    'masked_mean_pooling'
    """
    if pooling == "mean":
        return keras.layers.GlobalAveragePooling1D(dtype="float32", name="masked_mean_pooling")
    if pooling == "first":
        return FirstTokenPooling(dtype="float32", name="first_token_pooling")
    raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}.")


def encoder_graph(pooler, sequence_output_of):
    """`(inputs, outputs)` of the functional graph every shared encoder has.

    The inputs are `token_ids` and `padding_mask`;
    `sequence_output_of(token_ids, padding_mask)` gives the hidden states.
    The outputs are `{"sequence_output", "pooled_output"}`; the mean pooling
    averages the real (unpadded) tokens only.

    Example:
    >>> import numpy as np
    >>> states = lambda ids, mask: keras.ops.expand_dims(keras.ops.cast(ids, "float32"), -1)
    >>> model = keras.Model(*encoder_graph(make_pooler("mean"), states))
    >>> x = {"token_ids": np.array([[1, 3, 9]]), "padding_mask": np.array([[True, True, False]])}
    >>> model(x)["pooled_output"].numpy().tolist()
    [[2.0]]
    """
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input(shape=(None,), dtype="bool", name="padding_mask")
    sequence_output = sequence_output_of(token_ids, padding_mask)
    if isinstance(pooler, keras.layers.GlobalAveragePooling1D):
        pooled_output = pooler(sequence_output, mask=padding_mask)
    else:
        pooled_output = pooler(sequence_output)
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    return inputs, {"sequence_output": sequence_output, "pooled_output": pooled_output}


@keras.saving.register_keras_serializable(package="mtl_keras")
class SharedEncoder(keras.Model):
    """Embedding and Transformer blocks shared by every task.

    Takes `{"token_ids": int [B, L], "padding_mask": bool [B, L]}` and
    returns `{"sequence_output": [B, L, H], "pooled_output": [B, H]}`. The
    pooled output is the mean over real (unpadded) tokens, or the first
    token's state; it is computed in float32 under any precision. `L` may
    vary from batch to batch, up to `sequence_length`.

    Args:
        vocabulary_size: the token ids embedded (the preprocessor's vocabulary).
        sequence_length: the longest input the position embedding covers.
        hidden_dim: the width of every token's state.
        num_layers: Transformer encoder blocks (pre-layer-norm, GELU).
        num_heads: attention heads; must divide `hidden_dim`.
        intermediate_dim: the feed-forward width; default `4 * hidden_dim`.
        dropout: the dropout rate of embeddings, blocks and heads.
        pooling: `"mean"` over real tokens, or the `"first"` token.
        dtype: a Keras dtype policy name: `"float32"`, `"mixed_float16"`
            or `"mixed_bfloat16"`.

    Example:
    >>> import numpy as np
    >>> encoder = SharedEncoder(vocabulary_size=50, sequence_length=8,
    ...                         hidden_dim=8, num_layers=1, num_heads=2)
    >>> out = encoder({"token_ids": np.ones((2, 8), "int32"),
    ...                "padding_mask": np.ones((2, 8), bool)})
    >>> tuple(out["pooled_output"].shape)
    (2, 8)
    """

    def __init__(
        self,
        vocabulary_size,
        sequence_length,
        hidden_dim=64,
        num_layers=2,
        num_heads=2,
        intermediate_dim=None,
        dropout=0.1,
        pooling="mean",
        dtype="float32",
        **kwargs,
    ):
        check_encoder_arguments(
            hidden_dim, num_layers, num_heads, intermediate_dim, dropout,
            pooling, dtype, vocabulary_size, sequence_length,
        )
        intermediate_dim = intermediate_dim or 4 * hidden_dim
        # === Layers ===
        self.embedding = keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size=vocabulary_size,
            sequence_length=sequence_length,
            embedding_dim=hidden_dim,
            dtype=dtype,
            name="token_and_position_embedding",
        )
        self.embedding_dropout = keras.layers.Dropout(
            dropout, dtype=dtype, name="embedding_dropout"
        )
        self.transformer_layers = [
            keras_hub.layers.TransformerEncoder(
                intermediate_dim=intermediate_dim,
                num_heads=num_heads,
                dropout=dropout,
                activation="gelu",
                normalize_first=True,
                dtype=dtype,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, dtype=dtype, name="final_layer_norm"
        )
        self.pooler = make_pooler(pooling)

        # === Functional graph ===
        def sequence_output_of(token_ids, padding_mask):
            x = self.embedding_dropout(self.embedding(token_ids))
            for layer in self.transformer_layers:
                x = layer(x, padding_mask=padding_mask)
            return self.final_norm(x)

        super().__init__(*encoder_graph(self.pooler, sequence_output_of), **kwargs)

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.pooling = pooling
        self.precision = dtype

    @classmethod
    def for_preprocessor(cls, preprocessor, **kwargs):
        """An encoder sized for `preprocessor`'s vocabulary and sequence length."""
        return cls(preprocessor.vocabulary_size, preprocessor.sequence_length, **kwargs)

    def get_config(self):
        return {
            "vocabulary_size": self.vocabulary_size,
            "sequence_length": self.sequence_length,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "pooling": self.pooling,
            "dtype": self.precision,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
