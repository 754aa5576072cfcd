"""No unsafe loading or code execution in the package, the benchmarks or the
notebooks' code cells: Keras safe mode stays on, YAML is safe_load-ed, no pickle,
archives unpack through a member filter, no eval/exec."""

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}


def _is_true(node, value):
    return isinstance(node, ast.Constant) and node.value is value


def _call_problem(node):
    function = node.func
    keywords = {k.arg: k.value for k in node.keywords}
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    owner = getattr(function.value, "id", None) if isinstance(function, ast.Attribute) else None
    if "safe_mode" in keywords and _is_true(keywords["safe_mode"], False):
        return "safe_mode=False (Keras loads arbitrary code)"
    if "allow_pickle" in keywords and _is_true(keywords["allow_pickle"], True):
        return "allow_pickle=True (unpickles arbitrary objects)"
    if owner == "yaml" and name in UNSAFE_YAML:
        return f"yaml.{name} (use yaml.safe_load)"
    if name == "extractall" and not {"filter", "members"} & set(keywords):
        return "extractall without a member filter (filter= for tarfile, checked members= for zip)"
    if isinstance(function, ast.Name) and name in ("eval", "exec"):
        return f"{name}() runs arbitrary code"
    if name == "enable_unsafe_deserialization":
        return "enable_unsafe_deserialization turns Keras safe mode off"
    return None


def unsafe_patterns(source, where):
    """`where:line: problem` for each unsafe pattern in Python `source`."""
    found = []
    for node in ast.walk(ast.parse(source, filename=where)):
        problem = None
        if isinstance(node, ast.Call):
            problem = _call_problem(node)
        elif isinstance(node, ast.Import):
            modules = {alias.name.split(".")[0] for alias in node.names}
            if modules & PICKLE_MODULES:
                problem = f"imports {', '.join(sorted(modules & PICKLE_MODULES))} (pickle)"
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in PICKLE_MODULES:
                problem = f"imports from {node.module} (pickle)"
        if problem:
            found.append(f"{where}:{node.lineno}: {problem}")
    return found


def notebook_code(path):
    """The code cells of a notebook as one Python source (shell and magic lines blanked)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for line in source.splitlines():
            lines.append("" if line.lstrip().startswith(("!", "%")) else line)
        lines.append("")
    return "\n".join(lines)


def _sources():
    for folder in ("mtl_keras", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        yield path.relative_to(ROOT).as_posix(), notebook_code(path)


def test_the_code_has_no_unsafe_patterns():
    sources = list(_sources())
    assert any(where.endswith(".ipynb") for where, _ in sources), "no notebooks found"
    found = [problem for where, source in sources for problem in unsafe_patterns(source, where)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "snippet, problem",
    [
        ("keras.saving.load_model(path, safe_mode=False)", "safe_mode=False"),
        ("config = yaml.load(text, Loader=yaml.Loader)", "yaml.load"),
        ("config = yaml.full_load(text)", "yaml.full_load"),
        ("import pickle", "imports pickle"),
        ("from pickle import loads", "imports from pickle"),
        ("import joblib", "imports joblib"),
        ("x = np.load(path, allow_pickle=True)", "allow_pickle=True"),
        ("tarfile.open(path).extractall(target)", "extractall without a member filter"),
        ("zipfile.ZipFile(path).extractall(target)", "extractall without a member filter"),
        ("eval(user_text)", "eval() runs"),
        ("exec(code, {})", "exec() runs"),
        ("keras.config.enable_unsafe_deserialization()", "enable_unsafe_deserialization"),
    ],
)
def test_the_lint_catches_each_pattern(snippet, problem):
    found = unsafe_patterns(f"def f():\n    {snippet}\n", "bad.py")
    assert len(found) == 1 and problem in found[0], found
    assert found[0].startswith("bad.py:2: ")


def test_the_lint_passes_the_safe_forms():
    safe = "\n".join([
        "config = yaml.safe_load(text)",
        "keras.saving.load_model(path, safe_mode=True)",
        "np.load(path, allow_pickle=False)",
        "tarfile.open(path).extractall(target, filter='data')",
        "archive.extractall(target, members=checked)",
        "model.evaluate(x)",
        "tf.function(step)",
        "# pickle and eval( in a comment",
        "text = 'yaml.load( and safe_mode=False in a string'",
    ])
    assert unsafe_patterns(safe, "good.py") == []


def test_notebook_code_cells_are_linted(tmp_path):
    notebook = tmp_path / "bad.ipynb"
    notebook.write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "source": ["import pickle  # prose, not code"]},
        {"cell_type": "code", "source": ["!pip install mtl_keras\n", "%time x = 1\n"]},
        {"cell_type": "code", "source": ["import keras\n", "keras.saving.load_model('m.keras', safe_mode=False)\n"]},
    ]}))
    found = unsafe_patterns(notebook_code(notebook), "bad.ipynb")
    assert found == ["bad.ipynb:5: safe_mode=False (Keras loads arbitrary code)"]
