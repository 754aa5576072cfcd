"""mtl_keras: multi-task learning on text with Keras 3.

One shared encoder, one head per task, one training step that sums the
(weighted, label-masked) per-task losses.
"""

from mtl_keras.backbone import EncoderConfig, SharedEncoder
from mtl_keras.model import MultiTaskModel
from mtl_keras.tasks import KINDS, Task
from mtl_keras.weighting import EqualWeighting, LossWeighting, StaticWeighting

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "EncoderConfig",
    "EqualWeighting",
    "LossWeighting",
    "MultiTaskModel",
    "SharedEncoder",
    "StaticWeighting",
    "Task",
]
