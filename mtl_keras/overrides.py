"""`--set section.key=value`: settings changed on the command line, not in YAML.

An assignment names a key by its dotted path in the config file
(`training.learning_rate=0.001`, `encoder.hidden_dim=128`,
`data.train.0.max_rows=500` for the first training source) and gives the
value in YAML syntax (`3`, `0.5`, `1e-3`, `true`, `[topic, sentiment]`,
`null`). The assignments change the file's plain data before it is parsed,
so the config checker sees the result exactly as if the file said it: an
unknown key or a bad value gets the checker's message.
"""

import copy
import re

import yaml

from mtl_keras.config_files import ConfigError

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class OverrideError(ConfigError):
    """An assignment that cannot be applied (it names no place in the config)."""


def parse_value(text):
    """The value of `text` in YAML syntax; `1e-3` is a float, as people mean it.

    Example:
    >>> parse_value("3"), parse_value("1e-3"), parse_value("true"), parse_value("[a, b]")
    (3, 0.001, True, ['a', 'b'])
    """
    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    return value


def apply_overrides(mapping, assignments):
    """A copy of the config `mapping` with each `"dotted.key=value"` applied in order.

    A missing key is added (the checker then says whether it exists); a list
    is indexed by number. Raises `OverrideError` for an assignment without
    `=`, or one whose path runs through a value that is not a mapping or list.

    Example:
    >>> config = {"training": {"epochs": 5}, "data": {"train": [{"file": "a.tsv"}]}}
    >>> apply_overrides(config, ["training.epochs=2", "data.train.0.max_rows=100"])
    {'training': {'epochs': 2}, 'data': {'train': [{'file': 'a.tsv', 'max_rows': 100}]}}
    """
    result = copy.deepcopy(mapping)
    for assignment in assignments:
        key, equals, text = assignment.partition("=")
        path = key.strip().split(".")
        if not equals or not all(path):
            raise OverrideError(
                f"--set {assignment!r}: expected section.key=value, e.g. training.epochs=3."
            )
        place = result
        for depth, name in enumerate(path[:-1]):
            place = _step(place, name, assignment, ".".join(path[: depth + 1]))
        _assign(place, path[-1], parse_value(text), assignment)
    return result


def _step(place, name, assignment, where):
    if isinstance(place, dict):
        return place.setdefault(name, {})
    if isinstance(place, list) and name.isdigit() and int(name) < len(place):
        return place[int(name)]
    raise OverrideError(_not_a_place(place, name, assignment, where))


def _assign(place, name, value, assignment):
    if isinstance(place, dict):
        place[name] = value
    elif isinstance(place, list) and name.isdigit() and int(name) < len(place):
        place[int(name)] = value
    else:
        raise OverrideError(_not_a_place(place, name, assignment, name))


def _not_a_place(place, name, assignment, where):
    if isinstance(place, list):
        return (
            f"--set {assignment!r}: {where!r} is not an index of a list of "
            f"{len(place)} (0 to {len(place) - 1})."
        )
    return f"--set {assignment!r}: {name!r} is inside {place!r}, which is not a section."
