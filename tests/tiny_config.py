"""The bundled sample's config with a tiny model, for CLI-level tests."""

from pathlib import Path

import yaml

from mtl_keras.config import DEFAULT_CONFIG


def write_tiny_config(directory, **training):
    """Writes `tiny.yaml` in `directory`: the sample, a tiny model, `training` overrides."""
    mapping = yaml.safe_load(DEFAULT_CONFIG.read_text())
    mapping["preprocessor"] = {"vocabulary_size": 200, "sequence_length": 24}
    mapping["encoder"] = {"hidden_dim": 16, "num_layers": 1, "num_heads": 2}
    mapping["training"].update(training)
    path = Path(directory) / "tiny.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return path
