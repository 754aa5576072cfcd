"""mtl_keras: multi-task learning on text with Keras 3.

One shared encoder, one head per task, one training step that sums the
(weighted, label-masked) per-task losses.

The public names are imported lazily (PEP 562), so `import mtl_keras` does
not load TensorFlow until a name is used; the command line relies on this
to quiet TensorFlow's start-up logs before it loads.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "KINDS": "mtl_keras.tasks",
    "Task": "mtl_keras.tasks",
    "EncoderConfig": "mtl_keras.backbone",
    "SharedEncoder": "mtl_keras.backbone",
    "MultiTaskModel": "mtl_keras.model",
    "LossWeighting": "mtl_keras.weighting",
    "StaticWeighting": "mtl_keras.weighting",
    "EqualWeighting": "mtl_keras.weighting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mtl_keras' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
