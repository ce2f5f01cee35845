"""Models for the serving tests: trained by the real train.py into an isolated state, and
their probabilities computed outside the server (to check the server's answers against)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from iris_service.names import FEATURE_NAMES, MODEL_NAME
from iris_service.settings import Settings
from tools.local_server import ProjectState

# Seconds between two looks of each API worker at the serving aliases (the default, which the
# servers of these tests use): after a write, workers may disagree for up to that long.
ALIAS_POLL_S = float(Settings.model_fields["alias_poll_seconds"].default)

# The `trained_copy` fixture (tests/integration/conftest.py): a copy of a trained BentoML
# store, as (its state, the tag of each version, in training order).
TrainedCopy = Callable[..., tuple[ProjectState, tuple[str, ...]]]

EXPECTED_SCRIPT = """
import json, sys, bentoml
from iris_service.inference.model_loading import load_model
flowers = [[f[name] for name in json.loads(sys.argv[2])] for f in json.loads(sys.argv[1])]
out = {}
for stored in bentoml.models.list(sys.argv[3]):
    model = load_model(stored)
    out[str(stored.tag)] = model.predict_proba(flowers).round(6).tolist()
print(json.dumps(out))
"""


def stored_versions(state: ProjectState) -> set[str]:
    """Tags of the versions in the state's BentoML store (read from its folders)."""
    folder = state.bentoml_home / "models" / MODEL_NAME
    if not folder.is_dir():
        return set()
    return {f"{MODEL_NAME}:{path.name}" for path in folder.iterdir() if path.is_dir()}


def train(state: ProjectState, family: str) -> str:
    """Train one `family` with the real train.py; the tag of the version it stored."""
    before = stored_versions(state)
    result = state.train("--candidates", family, "--cv-folds", "2", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (tag,) = stored_versions(state) - before
    return tag


def model_file(state: ProjectState, tag: str) -> Path:
    """The compiled model a stored version serves (model.onnx in its folder)."""
    return state.bentoml_home / "models" / MODEL_NAME / tag.split(":")[1] / "model.onnx"


def probabilities_by_tag(
    state: ProjectState, flowers: Sequence[dict[str, float]]
) -> dict[str, list[list[float]]]:
    """predict_proba of `flowers` by every stored version, rounded as the API rounds."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            EXPECTED_SCRIPT,
            json.dumps(list(flowers)),
            json.dumps(FEATURE_NAMES),
            MODEL_NAME,
        ],
        env=state.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])
