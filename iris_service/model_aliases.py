"""The serving aliases: which stored model version is `champion` and which is `challenger`.

The MLflow registry is the source of truth (aliases on registered model versions,
`models:/iris-classifier@champion`). The served code cannot import MLflow (it is not in the
Bento), so the pipeline (`make train`, `make promote`, `make rollback`) mirrors the aliases,
as BentoML tags, into one small JSON file in the BentoML home that the runner watches:

    $BENTOML_HOME/aliases/<model name>.json
    {"champion": "iris-classifier:<version>", "challenger": "iris-classifier:<version>" | null,
     "updated_at": "<ISO 8601 UTC>"}

The file is replaced atomically (written beside it, then renamed), so a reader sees the old or
the new content, never a mix. With no file (a store from before aliases, or a container whose
image pins its versions), the service serves `settings.MODEL_TAG`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ALIASES_DIR = "aliases"


@dataclass(frozen=True)
class ServingAliases:
    champion: str | None
    challenger: str | None = None
    updated_at: str | None = None


def bentoml_home() -> Path:
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")


def aliases_path(model_name: str, home: Path | None = None) -> Path:
    return (home or bentoml_home()) / ALIASES_DIR / f"{model_name}.json"


def read_aliases(model_name: str, home: Path | None = None) -> ServingAliases | None:
    """The aliases, or None when no file exists; a malformed file raises ValueError."""
    path = aliases_path(model_name, home)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the serving aliases {path}: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("champion"), str | None):
        raise ValueError(f"the serving aliases {path} are not an object with a champion")
    return ServingAliases(raw.get("champion"), raw.get("challenger"), raw.get("updated_at"))


def write_aliases(model_name: str, aliases: ServingAliases, home: Path | None = None) -> Path:
    """Replace the aliases file atomically; `updated_at` is set to now."""
    path = aliases_path(model_name, home)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "champion": aliases.champion,
        "challenger": aliases.challenger,
        "updated_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(content, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
