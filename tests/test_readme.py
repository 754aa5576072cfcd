"""The README tells the truth: its Python example runs, its commands are what CI runs."""

import re
import subprocess
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_ten_line_example_runs():
    code = _python_blocks()[0].replace("epochs=5", "epochs=1")
    assert len([line for line in code.splitlines() if line.strip()]) <= 14
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    model = namespace["model"]
    assert sorted(model.task_names) == sorted(t.name for t in namespace["tasks"])
    assert model.history.history["loss"][0] > 0


def test_ci_runs_the_readme_test_command():
    root = README.parent
    command = subprocess.run(
        ["awk", '/<!-- test-command/ {found=1; next} found && /^```bash/ {getline; print; exit}', "README.md"],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert "pytest" in command and "pip install" in command
    assert "bash -c \"$command\"" in (root / ".ci" / "run").read_text()
    first_block = re.search(r"```bash\n(.*?)\n", README.read_text()).group(1)
    assert first_block.startswith("# Train")
    assert "mtl-keras train" in README.read_text().split("```bash")[1]
