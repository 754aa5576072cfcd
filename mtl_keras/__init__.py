"""mtl_keras: multi-task learning on text with Keras 3.

One shared encoder, one head per task, one training step that combines the
(weighted, label-masked) per-task losses.

`import mtl_keras` registers every Keras serializable of the package, so
`keras.saving.load_model("model.keras")` works after it. The one exception
is the `mtl-keras` command, which parses its arguments and quiets
TensorFlow's start-up logs before TensorFlow loads; there the names below
load on first use (PEP 562).
"""

import importlib
import os
import sys

__version__ = "0.2.0"

_EXPORTS = {
    "KINDS": "mtl_keras.kinds",
    "TaskKind": "mtl_keras.kinds",
    "register_kind": "mtl_keras.kinds",
    "Task": "mtl_keras.tasks",
    "TextPreprocessor": "mtl_keras.preprocess",
    "SharedEncoder": "mtl_keras.backbone",
    "MultiTaskModel": "mtl_keras.model",
    "LossWeighting": "mtl_keras.weighting",
    "StaticWeighting": "mtl_keras.weighting",
    "EqualWeighting": "mtl_keras.weighting",
    "export_saved_model": "mtl_keras.export",
    "load_for_serving": "mtl_keras.export",
}
# The modules that register Keras serializables.
_SERIALIZABLES = ("mtl_keras.model", "mtl_keras.export", "mtl_keras.pretrained")

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mtl_keras' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)


def _is_command_line():
    return os.path.basename(sys.argv[0] if sys.argv else "") == "mtl-keras"


if not _is_command_line():
    for _module in _SERIALIZABLES:
        importlib.import_module(_module)
