"""The `mtl-keras` arguments checked before TensorFlow starts (it takes seconds to load).

A wrong path, a config file that does not parse or a `--set` that names no
key is reported in well under a second; the constructors' checks follow in
`mtl_keras.config.load_config`, after TensorFlow has loaded.
"""

import datetime
from pathlib import Path

from mtl_keras.config_files import config_path, read_config_file
from mtl_keras.overrides import apply_overrides
from mtl_keras.paths import UnsafePathError, check_run_directory


class UsageError(ValueError):
    """A wrong argument found before TensorFlow starts; says what to pass."""


def out_dir(args, prefix=""):
    """The run (or comparison) directory: `--out`, else under `runs/`.

    Example:
    >>> import argparse
    >>> out_dir(argparse.Namespace(out=None, config="sample")).as_posix()
    'runs/sample'
    """
    if args.out:
        return Path(args.out)
    name = config_path(args.config).stem
    if not prefix:  # a training run: the same command, the same run directory
        return Path("runs") / name
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{prefix}{name}-{stamp}"


def _existing(path, what):
    if not Path(path).exists():
        raise UsageError(f"{what} {path} does not exist.")
    return Path(path)


def check_before_tensorflow(args):
    """Checks the arguments that need no TensorFlow; returns the first line to print (or None).

    Example:
    >>> import argparse
    >>> args = argparse.Namespace(command="train", config=None, set=["training.epochs=2"],
    ...                           out="runs/demo")
    >>> check_before_tensorflow(args).startswith("mtl-keras train: config ")
    True
    >>> check_before_tensorflow(argparse.Namespace(command="predict", path="no/such/run"))
    Traceback (most recent call last):
    ...
    mtl_keras.cli_checks.UsageError: No model at no/such/run: pass an exported SavedModel directory, a run directory or a .keras file written by `mtl-keras train`.
    """
    if args.command in ("train", "compare"):
        path = config_path(args.config)
        apply_overrides(read_config_file(path), args.set)
        out = out_dir(args, "" if args.command == "train" else "compare-")
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file, not a directory.")
        try:
            check_run_directory(out)
        except UnsafePathError as error:
            raise UsageError(str(error)) from None
        where = f", run directory {out}" if args.command == "train" else ""
        return f"mtl-keras {args.command}: config {path}{where}; starting TensorFlow..."
    if args.command in ("evaluate", "export"):
        model = _existing(args.model, "Model path")
        if args.command == "evaluate":
            if getattr(args, "data", None):
                _existing(args.data, "--data")
            if args.config is not None:
                read_config_file(config_path(args.config))
            elif not ((model if model.is_dir() else model.parent) / "config.yaml").is_file():
                raise UsageError(
                    f"No --config given and no config.yaml next to {model}: pass the "
                    "config whose dev data to use, e.g. --config my_run.yaml."
                )
    if args.command in ("predict", "serve"):
        serving_path(args.path)
        if getattr(args, "file", None):
            _existing(args.file, "--file")
    return None


def serving_path(path):
    """A SavedModel directory or `.keras` bundle for PATH (a run dir included).

    Example:
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> _ = (run / "model.keras").write_bytes(b"")
    >>> serving_path(run).name
    'model.keras'
    """
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return path
        if (path / "saved_model" / "saved_model.pb").is_file():
            return path / "saved_model"
        if (path / "model.keras").is_file():
            return path / "model.keras"
        raise UsageError(
            f"{path} is neither a SavedModel (no saved_model.pb) nor a run "
            "directory (no saved_model/ or model.keras)."
        )
    if path.is_file() and path.suffix == ".keras":
        return path
    raise UsageError(
        f"No model at {path}: pass an exported SavedModel directory, a run "
        "directory or a .keras file written by `mtl-keras train`."
    )
