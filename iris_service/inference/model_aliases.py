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
image pins its versions), the service serves `settings.model_tag`.

The file is input the service does not control (anyone who can write the BentoML home can
write it), so `read_aliases` accepts only what the pipeline writes: a small JSON object whose
champion and challenger are null or tags of THIS model (`<model name>:<version>`, BentoML's
tag syntax). Anything else raises InvalidAliases, whose `reason` names the fault without the
file's path, and the runner keeps serving what it serves (iris_service/inference/model_follower.py).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from iris_service.settings import bentoml_home

ALIASES_DIR = "aliases"
# What the pipeline writes is about 150 bytes; anything much larger is not ours.
MAX_FILE_BYTES = 4096
# A BentoML version: lowercase letters, digits and -._ inside, at most 63 characters.
_VERSION = re.compile(r"[a-z0-9](?:[-._a-z0-9]{0,61}[a-z0-9])?")
_MAX_TIME_CHARS = 64


# What tells one version of the file from another: (mtime_ns, inode, size); None: no file.
FileIdentity = tuple[int, int, int] | None


class InvalidAliases(ValueError):
    """An aliases file the service refuses; `reason` says why without the file's path, and
    `identity` is the identity of the file refused (when it could be opened)."""

    def __init__(self, path: Path, reason: str, identity: FileIdentity = None) -> None:
        super().__init__(f"cannot use the serving aliases {path}: {reason}")
        self.reason = reason
        self.identity = identity


@dataclass(frozen=True)
class ServingAliases:
    champion: str | None
    challenger: str | None = None
    updated_at: str | None = None


def aliases_path(model_name: str, home: Path | None = None) -> Path:
    return (home or bentoml_home()) / ALIASES_DIR / f"{model_name}.json"


def file_identity(path: Path) -> FileIdentity:
    """The identity of the file at `path` now (None: no file): cheap enough to poll."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_mtime_ns, stat.st_ino, stat.st_size)


def read_aliases(model_name: str, home: Path | None = None) -> ServingAliases | None:
    """The aliases, or None when no file exists; InvalidAliases (a ValueError) when the file
    cannot be read or holds anything but tags of `model_name`."""
    return read_aliases_file(aliases_path(model_name, home), model_name)[0]


def read_aliases_file(path: Path, model_name: str) -> tuple[ServingAliases | None, FileIdentity]:
    """read_aliases, with the identity of the very file read (taken from the open file, so a
    replacement between a poll's look and this read is not mistaken for the file read)."""
    try:
        with path.open("rb") as file:
            stat = os.fstat(file.fileno())
            identity = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
            content = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        reason = f"cannot be read ({exc.strerror or type(exc).__name__})"
        raise InvalidAliases(path, reason, file_identity(path)) from None
    try:
        return _parse(content, path, model_name), identity
    except InvalidAliases as exc:
        exc.identity = identity
        raise


def _parse(content: bytes, path: Path, model_name: str) -> ServingAliases:
    """The aliases in `content`; InvalidAliases for anything the pipeline does not write."""
    if len(content) > MAX_FILE_BYTES:
        raise InvalidAliases(path, f"larger than {MAX_FILE_BYTES} bytes")
    try:
        raw = json.loads(content.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidAliases(path, "not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if hasattr(exc, "lineno") else ""
        raise InvalidAliases(path, f"not valid JSON{where}") from None
    if not isinstance(raw, dict):
        raise InvalidAliases(path, "not a JSON object with a champion")
    updated_at = raw.get("updated_at")
    if not (updated_at is None or (isinstance(updated_at, str) and len(updated_at) <= 64)):
        raise InvalidAliases(path, "updated_at must be a short text (ISO 8601)")
    return ServingAliases(
        _tag(raw.get("champion"), "champion", model_name, path),
        _tag(raw.get("challenger"), "challenger", model_name, path),
        updated_at,
    )


def _tag(value: object, role: str, model_name: str, path: Path) -> str | None:
    """`value` when it is null or a tag of `model_name`; InvalidAliases otherwise."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidAliases(path, f"the {role} must be a tag (text) or null")
    name, colon, version = value.partition(":")
    if not (colon and _VERSION.fullmatch(name) and _VERSION.fullmatch(version)):
        # Not shown: text that is not a tag could be anything (a path, control characters).
        raise InvalidAliases(path, f"the {role} is not a tag ({model_name}:<version>)")
    if name != model_name:
        raise InvalidAliases(path, f"the {role} {value} is not a version of {model_name}")
    return value


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
