"""The package's shape: modules of one job (<= 500 lines), imports flowing one way,
no kind switches outside kinds/."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mtl_keras"
# The one-way order (docs/CONTRACTS.md): a module may import only earlier ones.
ORDER = [
    "paths", "_compat", "manifest", "plots", "metrics", "words", "entities", "kinds.base", "kinds.multiclass", "kinds.binary",
    "kinds.multilabel", "kinds.regression", "kinds.tagging", "kinds", "tasks",
    "data.examples", "data.conll", "data.sources", "data.tfds_source", "data.mixing", "data.split", "data.sample", "data",
    "preprocess", "batching", "data_report", "backbone", "weighting.base", "weighting.static", "weighting.uncertainty",
    "weighting.dwa", "weighting.rlw", "weighting.famo", "weighting.pcgrad", "weighting.cagrad",
    "weighting.upgrad", "weighting.imtl", "weighting", "step", "optimizers", "guards", "serving", "model",
    "minilm", "pretrained", "loop", "checkpoints", "epochs", "diagnostics", "progress", "add_task", "warmup", "export", "serve", "distribute", "run_files", "config_files", "config_checks", "training_settings", "overrides", "monitoring", "config",
    "run_data", "pipeline", "run_records", "train",
    "compare_report", "compare", "cli_checks", "cli_parser", "cli",
]
LEVELS = {name: i for i, name in enumerate(ORDER)}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        yield name.removesuffix(".__init__"), path


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mtl_keras"):
            base = node.module.removeprefix("mtl_keras").lstrip(".")
            if base:
                yield base
            else:
                yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mtl_keras."):
                    yield alias.name.removeprefix("mtl_keras.")


def test_every_module_is_placed_and_short():
    for name, path in _modules():
        if name == "__init__":
            continue
        assert name in LEVELS, f"{name} is not placed in the order (docs/CONTRACTS.md)"
        lines = len(path.read_text().splitlines())
        assert lines <= 500, f"{path.name} has {lines} lines"


def test_imports_flow_one_way():
    for name, path in _modules():
        if name == "__init__":
            continue
        for imported in _imports(path):
            if imported in ("__version__",) or imported not in LEVELS:
                continue
            if name in ("data", "kinds"):
                continue  # a package re-exports its modules
            assert LEVELS[imported] < LEVELS[name], f"{name} imports {imported}, which comes after it"


def test_no_module_but_kinds_switches_on_a_kind_name():
    kinds = "multiclass|binary|multilabel|regression|tagging"
    pattern = re.compile(rf"""(kind\\s*(==|!=|in)\\s*[\\(\\["']|["']({kinds})["']\\s*(==|!=)\\s*\\w*kind)""")
    for name, path in _modules():
        if name.startswith("kinds"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path.name}:{number}: {line.strip()}"
