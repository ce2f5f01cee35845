"""Shared libraries of the image without their symbol tables, for the image's hardening layer.

Several wheels the server installs ship their compiled extensions with full symbol tables
(uvloop's event loop alone carries about 12 MB of them; SQLAlchemy's, aiohttp's, PyYAML's and
OpenBLAS's more). The symbols serve debuggers only: the dynamic loader uses the dynamic symbol
table, which `strip --strip-unneeded` keeps. The image has no binutils, so the libraries are
copied out of the built image, stripped on the host and laid over the same paths by the
hardening layer (`COPY stripped/ /`), whose squash drops the originals. Only files that
shrink are laid over; a file `strip` does not take (not ELF) is left as it is.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

# Where the server's Python environment keeps its compiled extensions (BentoML's layout).
VENV = "app/.venv"
LIST_AND_TAR = f"cd / && find {VENV} -type f -name '*.so*' | tar -cf - -T -"
RUN_AS_ROOT = ("run", "--rm", "--network", "none", "--user", "root", "--entrypoint", "sh")
# Below this saving a file is not worth a layer entry.
MIN_SAVING_BYTES = 64 * 1024


def strip_tool() -> str:
    """The host's `strip` (binutils), installed when missing."""
    if not shutil.which("strip"):
        script = Path(__file__).with_name("ensure-debian-packages.sh")
        subprocess.run(["bash", str(script), "binutils"], check=True)
    return shutil.which("strip") or "strip"


def strip_out_of_image(cli: str, tag: str, env: dict[str, str], into: Path) -> int:
    """Write stripped copies of the image's shared libraries under `into` (at their paths
    relative to /); the bytes they save."""
    archive = subprocess.run(
        [cli, *RUN_AS_ROOT, tag, "-c", LIST_AND_TAR],
        env=env,
        capture_output=True,
        check=True,
        timeout=300,
    ).stdout
    strip = strip_tool()
    saved = 0
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            target = into / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file
            target.write_bytes(source.read())
            target.chmod(member.mode)
            done = subprocess.run([strip, "--strip-unneeded", str(target)], capture_output=True)
            saving = member.size - target.stat().st_size
            if done.returncode != 0 or saving < MIN_SAVING_BYTES:
                target.unlink()
                continue
            saved += saving
    return saved
