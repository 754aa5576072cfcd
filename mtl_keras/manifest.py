"""Verified exports: a SHA-256 manifest of the files an export wrote.

Loading a SavedModel runs its graph (resource initializers run inside
`tf.saved_model.load`), so mtl_keras checks a SavedModel's files before
TensorFlow opens any of them:

- `write_manifest(directory)` hashes every file under `directory` into
  `directory/mtl_keras_manifest.json` (`MANIFEST_FILE`, not listed in
  itself). `export_saved_model` writes one as its last step, so it covers
  every file of the export; `files=[...]` writes a partial manifest (a run
  directory lists its `model.keras`: its logs and checkpoints keep changing).
- `verify_manifest(directory)` refuses, with a `ManifestError` naming the
  file, a changed, missing or (for a full manifest) extra file, a symbolic
  link, or a directory without a manifest. `trust_unverified=True` skips
  the check, for a foreign SavedModel from a source you trust.
- `verify_keras_file(path)` checks a `.keras` file against the manifest
  beside it (a run directory's); a `.keras` file without one is left to
  Keras's `safe_mode`, unless `required=True`.

A manifest detects a file changed or added after export (a corrupted copy,
a swapped variable file, a SavedModel mtl_keras did not write); it is not a
signature: whoever can rewrite the files can rewrite the manifest too.
"""

import hashlib
import json
import logging
import os
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)

MANIFEST_FILE = "mtl_keras_manifest.json"
FORMAT = "mtl_keras.manifest"
FORMAT_VERSION = 1
TRUST_HINT = (
    "pass trust_unverified=True (mtl-keras --trust-unverified) only for a "
    "model from a source you trust: loading a SavedModel runs its code"
)


class ManifestError(ValueError):
    """Files that do not match their manifest (or no manifest); names the file."""


def file_sha256(path):
    """The SHA-256 of a file's bytes, in hex.

    Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "empty"
    >>> path.write_bytes(b"")
    0
    >>> file_sha256(path)[:16]
    'e3b0c44298fc1c14'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tree(directory):
    """The files under `directory` (relative POSIX paths), the manifest left out."""
    found = []
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(root, name)
            if path.is_symlink():
                raise ManifestError(
                    f"{path} is a symbolic link; an mtl_keras export holds only "
                    "plain files, so it is refused."
                )
        for name in files:
            relative = Path(root, name).relative_to(directory).as_posix()
            if relative != MANIFEST_FILE:
                found.append(relative)
    return sorted(found)


def write_manifest(directory, files=None):
    """Writes `directory/mtl_keras_manifest.json`: the SHA-256 of each file.

    Args:
        directory: the SavedModel (or run) directory.
        files: the relative paths to list; None lists every file under
            `directory` (a full manifest: verification refuses extra files).

    Returns:
        The manifest dict: `format`, `format_version`, `complete`, `files`
        (`{relative path: sha256}`).

    Example:
    >>> import tempfile
    >>> directory = Path(tempfile.mkdtemp())
    >>> (directory / "variables").mkdir()
    >>> _ = (directory / "variables" / "data").write_bytes(b"weights")
    >>> sorted(write_manifest(directory)["files"])
    ['variables/data']
    >>> (directory / MANIFEST_FILE).is_file()
    True
    """
    directory = Path(directory)
    complete = files is None
    names = _tree(directory) if complete else sorted(PurePosixPath(f).as_posix() for f in files)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "algorithm": "sha256",
        "complete": complete,
        "files": {name: file_sha256(directory / name) for name in names},
    }
    target = directory / MANIFEST_FILE
    partial = target.with_name(MANIFEST_FILE + ".tmp")
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, target)
    return manifest


def read_manifest(directory):
    """The manifest of `directory`, checked for its format; None if absent.

    Example:
    >>> import tempfile
    >>> directory = Path(tempfile.mkdtemp())
    >>> read_manifest(directory) is None
    True
    >>> read_manifest(directory) if write_manifest(directory) else None
    {'algorithm': 'sha256', 'complete': True, 'files': {}, 'format': 'mtl_keras.manifest', 'format_version': 1}
    """
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path} is not a valid manifest: {error}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ManifestError(f"{path} is not an mtl_keras manifest (format {FORMAT!r}).")
    if manifest.get("format_version") != FORMAT_VERSION or not isinstance(
        manifest.get("files"), dict
    ):
        raise ManifestError(
            f"{path} has manifest format version {manifest.get('format_version')}; "
            f"this mtl_keras reads version {FORMAT_VERSION}: export the model again."
        )
    for name in manifest["files"]:
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
            raise ManifestError(f"{path} lists {name!r}, a path outside its directory.")
    return manifest


def verify_manifest(directory, trust_unverified=False):
    """Checks every file of `directory` against its manifest, before loading.

    Raises:
        ManifestError: no manifest, or a file changed, missing, extra (for a
            full manifest) or a symbolic link; the message names the file.

    Returns:
        The manifest, or None when `trust_unverified` skipped the check.

    Example:
    >>> import tempfile
    >>> directory = Path(tempfile.mkdtemp())
    >>> _ = (directory / "saved_model.pb").write_bytes(b"graph")
    >>> _ = write_manifest(directory)
    >>> sorted(verify_manifest(directory)["files"])
    ['saved_model.pb']
    >>> _ = (directory / "saved_model.pb").write_bytes(b"other graph")
    >>> verify_manifest(directory)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mtl_keras.manifest.ManifestError: .../saved_model.pb changed since it was exported (SHA-256 ... expected ...); refusing to load ...
    """
    directory = Path(directory)
    if trust_unverified:
        logger.warning("Loading %s without verifying its files (trust_unverified).", directory)
        return None
    manifest = read_manifest(directory)
    if manifest is None:
        raise ManifestError(
            f"{directory} has no {MANIFEST_FILE}, so mtl_keras cannot verify it "
            "(export_saved_model and `mtl-keras train` write one); refusing to "
            f"load it: {TRUST_HINT}."
        )
    extra = sorted(set(_tree(directory)) - set(manifest["files"])) if manifest.get("complete") else []
    if extra:
        raise ManifestError(
            f"{directory / extra[0]} is not in {directory / MANIFEST_FILE} (added "
            f"after export); refusing to load {directory}: {TRUST_HINT}."
        )
    for name, expected in sorted(manifest["files"].items()):
        path = directory / name
        if path.is_symlink():
            raise ManifestError(f"{path} is a symbolic link; refusing to load {directory}.")
        if not path.is_file():
            raise ManifestError(
                f"{path} is listed in {directory / MANIFEST_FILE} but missing; "
                f"refusing to load {directory}."
            )
        actual = file_sha256(path)
        if actual != expected:
            raise ManifestError(
                f"{path} changed since it was exported (SHA-256 {actual[:16]}..., "
                f"expected {expected[:16]}...); refusing to load {directory}: "
                "export the model again, or restore the file."
            )
    return manifest


def verify_keras_file(path, trust_unverified=False, required=False):
    """Checks a `.keras` file against the manifest of its directory.

    A file with no manifest beside it passes (Keras's `safe_mode` guards the
    format) unless `required`, as for a run directory.

    Returns:
        True if verified, False if there was no manifest (or the check was
        skipped).

    Example:
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> _ = (run / "model.keras").write_bytes(b"zip")
    >>> verify_keras_file(run / "model.keras")  # no manifest: safe_mode decides
    False
    >>> _ = write_manifest(run, ["model.keras"])
    >>> verify_keras_file(run / "model.keras")
    True
    """
    path = Path(path)
    if trust_unverified:
        return verify_manifest(path.parent, trust_unverified=True) is not None
    if read_manifest(path.parent) is None and not required:
        return False
    manifest = verify_manifest(path.parent)
    if path.name not in manifest["files"]:
        raise ManifestError(
            f"{path} is not listed in {path.parent / MANIFEST_FILE}; refusing to "
            f"load it: {TRUST_HINT}."
        )
    return True
