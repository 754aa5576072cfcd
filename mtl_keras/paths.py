"""Where mtl_keras may write: a run directory is refused if it leads elsewhere.

`check_run_directory(path)` refuses a run directory reached through a
symbolic link (the directory itself or any directory above it): the
whole run would be written into the link's target, somewhere the command
line did not name. It needs no TensorFlow, so the command line checks it
first, and `run_files.prepare` checks it again before writing.
"""

import os
from pathlib import Path


class UnsafePathError(ValueError):
    """A path that resolves somewhere other than where it says; names both."""


def check_run_directory(path):
    """Returns `path` if no part of it is a symbolic link; raises `UnsafePathError` otherwise.

    Example:
    >>> import tempfile
    >>> base = Path(tempfile.mkdtemp())
    >>> (base / "elsewhere").mkdir()
    >>> (base / "runs").symlink_to(base / "elsewhere")
    >>> check_run_directory(base / "real" / "run") == base / "real" / "run"
    True
    >>> check_run_directory(base / "runs" / "sample")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mtl_keras.paths.UnsafePathError: The run directory ... goes through the symbolic link ...
    """
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    for part in [absolute, *absolute.parents]:
        if part.is_symlink():
            raise UnsafePathError(
                f"The run directory {path} goes through the symbolic link {part} (to "
                f"{os.path.realpath(part)}): mtl_keras would write the run there. Pass "
                f"the real path instead: {Path(os.path.realpath(absolute))}."
            )
    return path
