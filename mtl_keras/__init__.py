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
import importlib.metadata
import os
import sys

__version__ = "0.2.0"


def _keras_floor():
    """The lowest Keras the installed mtl_keras requires (setup.cfg's
    `keras>=...`, read from the distribution's metadata); None if unknown."""
    from packaging.requirements import Requirement

    try:
        requirements = importlib.metadata.requires("mtl_keras") or []
    except importlib.metadata.PackageNotFoundError:  # a source tree, not installed
        return None
    for line in requirements:
        requirement = Requirement(line)
        if requirement.name == "keras" and requirement.marker is None:
            floors = [s.version for s in requirement.specifier if s.operator == ">="]
            return floors[0] if floors else None
    return None


def _check_keras_version():
    """Refuses a Keras older than the floor (pip enforces it at install
    time only; an environment can change afterwards)."""
    from packaging.version import Version

    floor = _keras_floor()
    try:
        installed = importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        return  # importing keras will say it is missing
    if floor is not None and Version(installed) < Version(floor):
        raise ImportError(
            f"mtl_keras needs keras>={floor}, but keras {installed} is installed "
            "(the floor of setup.cfg: the oldest Keras whose safe_mode loading "
            f"and private APIs mtl_keras is tested with): pip install 'keras>={floor}'."
        )


_check_keras_version()

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
