"""The longest prompt a checkpoint accepts, read from its config.json.

The prompt tools (`brew prompts render|lint`) need this number without
loading weights or starting an engine; the engines read the same field
(`max_position_embeddings`) from the loaded model.
"""

from __future__ import annotations

import json
from pathlib import Path

from brew.errors import TaskConfigError

LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def max_model_len(model_dir: Path | str) -> int:
    """The model's maximum length in tokens, from `config.json` (or its
    `text_config`, as multimodal checkpoints nest it)."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise TaskConfigError(f"{path}: cannot read the model config: {error}") from error
    for section in (config, config.get("text_config") or {}):
        for key in LENGTH_KEYS:
            if isinstance(section.get(key), int):
                return int(section[key])
    raise TaskConfigError(f"{path}: no maximum length ({', '.join(LENGTH_KEYS)}); pass --max-model-len")
