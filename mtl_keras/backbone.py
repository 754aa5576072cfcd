"""The shared encoder: token + position embedding, Transformer blocks, pooling."""

import dataclasses

import keras
import keras_hub

POOLING_MODES = ("mean", "first")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Sizes of the shared encoder, with small CPU-friendly defaults.

    Example:
    >>> config = EncoderConfig(vocabulary_size=500, hidden_dim=32)
    >>> config.intermediate_dim
    128
    """

    vocabulary_size: int = 5000
    sequence_length: int = 128  # the longest input the position embedding covers
    hidden_dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_dim: int = None  # defaults to 4 * hidden_dim
    dropout: float = 0.1
    pooling: str = "mean"  # "mean" over real tokens, or the "first" token

    def __post_init__(self):
        if self.intermediate_dim is None:
            object.__setattr__(self, "intermediate_dim", 4 * self.hidden_dim)
        if self.pooling not in POOLING_MODES:
            raise ValueError(
                f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}."
            )
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim ({self.hidden_dim}) must be divisible by "
                f"num_heads ({self.num_heads})."
            )
        for field in ("vocabulary_size", "sequence_length", "hidden_dim", "num_layers"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1.")


@keras.saving.register_keras_serializable(package="mtl_keras")
class FirstTokenPooling(keras.layers.Layer):
    """Takes the hidden state of the first token (the start token)."""

    def call(self, inputs):
        return inputs[:, 0, :]


@keras.saving.register_keras_serializable(package="mtl_keras")
class SharedEncoder(keras.Model):
    """Embedding and Transformer blocks shared by every task.

    Takes `{"token_ids": int [B, L], "padding_mask": bool [B, L]}` and
    returns `{"sequence_output": [B, L, H], "pooled_output": [B, H]}`. The
    pooled output is the mean over real (unpadded) tokens, or the first
    token's state; it is computed in float32 under any precision. `L` may
    vary from batch to batch, up to `sequence_length`.

    Args:
        vocabulary_size, sequence_length, hidden_dim, num_layers, num_heads,
        intermediate_dim, dropout, pooling: see `EncoderConfig`.
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
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim=None,
        dropout=0.1,
        pooling="mean",
        dtype="float32",
        **kwargs,
    ):
        config = EncoderConfig(
            vocabulary_size=vocabulary_size,
            sequence_length=sequence_length,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            pooling=pooling,
        )
        if dtype not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {dtype!r}.")
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
                intermediate_dim=config.intermediate_dim,
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
        if pooling == "mean":
            self.pooler = keras.layers.GlobalAveragePooling1D(
                dtype="float32", name="masked_mean_pooling"
            )
        else:
            self.pooler = FirstTokenPooling(dtype="float32", name="first_token_pooling")

        # === Functional graph ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="bool", name="padding_mask")
        x = self.embedding_dropout(self.embedding(token_ids))
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=padding_mask)
        sequence_output = self.final_norm(x)
        if pooling == "mean":
            pooled_output = self.pooler(sequence_output, mask=padding_mask)
        else:
            pooled_output = self.pooler(sequence_output)
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs={
                "sequence_output": sequence_output,
                "pooled_output": pooled_output,
            },
            **kwargs,
        )

        # === Config ===
        self.config = config
        self.precision = dtype

    def get_config(self):
        return {
            **dataclasses.asdict(self.config),
            "dtype": self.precision,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def from_encoder_config(cls, config, precision="float32", **kwargs):
        return cls(**dataclasses.asdict(config), dtype=precision, **kwargs)
