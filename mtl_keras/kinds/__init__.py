"""Task kinds: everything that follows from *what* a task predicts.

One class per kind owns, for a `Task` of that kind: the head width, the loss
(on logits), the metrics and the headline metric, how a raw label cell is
parsed and what stands in for a missing one, the serving outputs (computed
in the graph), how a client formats them, and the plot of a run. `Task`
delegates to its kind; no other module switches on a kind's name.

| kind | label | head | loss | metrics |
|---|---|---|---|---|
| multiclass | int in [0, C) | C logits | softmax cross-entropy | accuracy, macro F1, MCC |
| binary | 0 or 1 | 1 logit | sigmoid cross-entropy | accuracy, AUC, precision, recall, F1, MCC |
| multilabel | C-hot vector | C logits | sigmoid cross-entropy | accuracy, macro F1, AUC |
| regression | float | 1 value | mean squared error | MSE, MAE |
| tagging | int per word | C logits per token | softmax cross-entropy | entity F1 (IOB/BIOES tags), token accuracy |

A new kind is a subclass registered with `register_kind`; nothing else in
the package needs to change.

Example:
>>> get_kind("binary").headline_metric
'accuracy'
>>> sorted(KINDS)[:2]
['binary', 'multiclass']
"""

from mtl_keras.kinds.base import (
    KINDS,
    THRESHOLD,
    ClassKind,
    TaskKind,
    apply_label_map,
    format_rows,
    get_kind,
    parse_class,
    register_kind,
)
from mtl_keras.kinds.binary import Binary
from mtl_keras.kinds.multiclass import Multiclass
from mtl_keras.kinds.multilabel import Multilabel
from mtl_keras.kinds.regression import Regression
from mtl_keras.kinds.tagging import Tagging

# Registered in this order (it is the order error messages list them in).
for _kind in (Multiclass, Binary, Multilabel, Regression, Tagging):
    register_kind(_kind)

__all__ = [
    "KINDS", "THRESHOLD", "Binary", "ClassKind", "Multiclass", "Multilabel",
    "Regression", "Tagging", "TaskKind", "apply_label_map", "format_rows",
    "get_kind", "parse_class", "register_kind",
]
