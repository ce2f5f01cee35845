"""The size of the image `make container` built last, for the image-size target.

`make container` records the tag of its image in state/containers/last-image; the size is
asked from the same container tool (`image inspect`). No recorded image, no tool or an image
since removed gives a reason instead: the target is then "not measured", never met.
"""

from __future__ import annotations

import subprocess
from typing import Any

BYTES_PER_MB = 1_000_000  # as `make container` prints it
INSPECT_TIMEOUT_S = 60


def last_image() -> dict[str, Any]:
    """{"tag", "size_mb", "backend"} of the last image, or {"not_measured": reason}."""
    from tools import containers

    try:
        tag = (containers.STATE / "last-image").read_text().strip()
    except FileNotFoundError:
        return {"not_measured": "no image built: run `make container` first"}
    try:
        backend = containers.pick_backend()
        size = containers.image_size(backend, tag, containers.environment(backend))
    except (OSError, SystemExit, ValueError, subprocess.SubprocessError) as exc:
        return {"tag": tag, "not_measured": f"size of {tag} unavailable ({type(exc).__name__})"}
    return {"tag": tag, "backend": backend, "size_mb": round(size / BYTES_PER_MB, 1)}
