"""How per-task losses (or per-task gradients) combine into one update.

One file per method; the interface is `base.LossWeighting` (read its module
docstring first). By cost:

- losses only (about 1x a step): `static` (`StaticWeighting`, the default),
  `equal`, `uncertainty` (Kendall et al. 2018), `dwa` (Liu et al. 2019),
  `rlw` (Lin et al. 2022), `famo` (Liu et al. 2023; one extra forward pass);
- per-task gradients of the shared encoder (about (1 + 2T) / 3x a step, T
  gradients in memory): `pcgrad` (Yu et al. 2020), `cagrad` (Liu et al.
  2021), `upgrad` (Quinton and Rey 2024);
- per-task gradients of the shared features (about 1x): `imtl_g` (Liu et
  al. 2021).

Each is a Keras layer, serialized with the model; its state (learned
variables, loss history) is saved in `.keras` files and checkpoints.
"""

import difflib

from mtl_keras.weighting.base import GradientWeighting, LossWeighting
from mtl_keras.weighting.cagrad import CAGrad
from mtl_keras.weighting.dwa import DynamicWeightAverage
from mtl_keras.weighting.famo import FAMO
from mtl_keras.weighting.imtl import IMTLG
from mtl_keras.weighting.pcgrad import PCGrad
from mtl_keras.weighting.rlw import RandomLossWeighting
from mtl_keras.weighting.static import EqualWeighting, StaticWeighting
from mtl_keras.weighting.uncertainty import UncertaintyWeighting
from mtl_keras.weighting.upgrad import UPGrad

METHODS = {
    "static": StaticWeighting,
    "equal": EqualWeighting,
    "uncertainty": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
    "rlw": RandomLossWeighting,
    "famo": FAMO,
    "pcgrad": PCGrad,
    "cagrad": CAGrad,
    "upgrad": UPGrad,
    "imtl_g": IMTLG,
}


def method_parts(spec):
    """`"famo"` or `{"method": "famo", **arguments}` -> `(name, arguments)`.

    Example:
    >>> method_parts({"method": "cagrad", "alpha": 0.4})
    ('cagrad', {'alpha': 0.4})
    """
    if isinstance(spec, str):
        return spec, {}
    spec = dict(spec)
    return spec.pop("method", "static"), spec


def get_weighting(spec, tasks=None):
    """A weighting method from its name or `{"method": name, **arguments}`.

    `static` without `weights` takes each task's `loss_weight` from `tasks`.

    Example:
    >>> get_weighting({"method": "dwa", "temperature": 3.0}).temperature
    3.0
    >>> get_weighting("pc_grad")
    Traceback (most recent call last):
    ...
    ValueError: Unknown weighting method 'pc_grad' (known: cagrad, dwa, equal, famo, imtl_g, pcgrad, rlw, static, uncertainty, upgrad). Did you mean 'pcgrad'?
    """
    if isinstance(spec, LossWeighting):
        return spec
    name, kwargs = method_parts(spec)
    if name not in METHODS:
        raise ValueError(
            f"Unknown weighting method {name!r} (known: {', '.join(sorted(METHODS))})."
            + "".join(f" Did you mean {c!r}?" for c in difflib.get_close_matches(name, METHODS, 1))
        )
    if name == "static" and "weights" not in kwargs and tasks is not None:
        kwargs["weights"] = {t.name: t.loss_weight for t in tasks}
    return METHODS[name](**kwargs)


__all__ = [
    "METHODS",
    "CAGrad",
    "DynamicWeightAverage",
    "EqualWeighting",
    "FAMO",
    "GradientWeighting",
    "IMTLG",
    "LossWeighting",
    "PCGrad",
    "RandomLossWeighting",
    "StaticWeighting",
    "UPGrad",
    "UncertaintyWeighting",
    "get_weighting",
    "method_parts",
]
