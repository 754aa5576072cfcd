"""Config files as plain data: where they are and how they are read, without TensorFlow.

The command line reads and checks the file (and applies `--set`) before it
starts TensorFlow, so a wrong path or a YAML typo is reported at once; the
constructors' checks come after (`mtl_keras.config.load_config`).
"""

import json
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "sample.yaml"


class ConfigError(ValueError):
    """A problem in a run config; the message says where and what to fix."""


def shipped_configs():
    """The config files that come with the package.

    Example:
    >>> "sample" in [path.stem for path in shipped_configs()]
    True
    """
    return sorted(CONFIG_DIR.glob("*.yaml"))


def config_path(path=None):
    """The file of `path`: a path, a shipped config's name, or None (the sample).

    Example:
    >>> config_path("sample") == DEFAULT_CONFIG == config_path()
    True
    """
    if path is None:
        return DEFAULT_CONFIG
    if not Path(path).exists() and (CONFIG_DIR / f"{path}.yaml").is_file():
        return CONFIG_DIR / f"{path}.yaml"
    return Path(path)


def read_config_file(path):
    """The plain data of a YAML (`yaml.safe_load`) or JSON config file.

    Example:
    >>> sorted(read_config_file(DEFAULT_CONFIG))[:3]
    ['data', 'data_root', 'encoder']
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"Config file {path} does not exist. Shipped configs: "
            f"{', '.join(p.stem for p in shipped_configs())}."
        )
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(
            f"Config file {path} is not valid {path.suffix[1:].upper()}: {error}"
        ) from None
