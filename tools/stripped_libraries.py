"""Shared libraries of the image without their symbol tables, for the image's hardening layer.

Several wheels the server installs ship their compiled extensions with full symbol tables
(uvloop's event loop alone carries about 12 MB of them; SQLAlchemy's, aiohttp's and PyYAML's
more). The symbols serve debuggers only: the dynamic loader uses the dynamic symbol table,
which `strip --strip-unneeded` keeps. The image has no binutils, so the libraries are copied
out of the built image, stripped on the host and laid over the same paths by the hardening
layer (`COPY stripped/ /`), whose squash drops the originals. Left as they are: files that
would not shrink, files `strip` does not take (not ELF), and files with an RPATH or RUNPATH —
those that auditwheel's patchelf rewrote (the vendored `*.libs`), which strip can leave
unloadable ("ELF load command address/offset not page-aligned"). After the build every
stripped file is loaded once in the image (`check_loads`), so a bad one fails the build.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

# Where the server's Python environment keeps its compiled extensions (BentoML's layout).
# Absolute in the image; the tar archive names files relative to / (no leading slash).
IMAGE_VENV = "/app/.venv"
IMAGE_SITE_PACKAGES = f"{IMAGE_VENV}/lib/python3.11/site-packages"
SITE_PACKAGES = f"{IMAGE_SITE_PACKAGES.removeprefix('/')}/"
LIST_AND_TAR = f"cd / && find {IMAGE_VENV.removeprefix('/')} -type f -name '*.so*' | tar -cf - -T -"
RUN_AS_ROOT = ("run", "--rm", "--network", "none", "--user", "root", "--entrypoint")
# Below this saving a file is not worth a layer entry.
MIN_SAVING_BYTES = 64 * 1024
# Loads each file given: an extension module by its dotted name, any other library by ctypes.
LOAD_EACH = """
import ctypes, importlib, sys
for name in sys.argv[1:]:
    if name.startswith("/"):
        ctypes.CDLL(name)
    else:
        importlib.import_module(name)
print(len(sys.argv) - 1)
"""


def binutils() -> tuple[str, str]:
    """The host's `strip` and `readelf` (binutils), installed when missing."""
    if not (shutil.which("strip") and shutil.which("readelf")):
        script = Path(__file__).with_name("ensure-debian-packages.sh")
        subprocess.run(["bash", str(script), "binutils"], check=True)
    return shutil.which("strip") or "strip", shutil.which("readelf") or "readelf"


def _patched(readelf: str, path: Path) -> bool:
    """An RPATH/RUNPATH entry: the file was rewritten by patchelf (auditwheel)."""
    dynamic = subprocess.run([readelf, "-d", str(path)], capture_output=True, text=True)
    return dynamic.returncode != 0 or "RPATH" in dynamic.stdout or "RUNPATH" in dynamic.stdout


def strip_out_of_image(cli: str, tag: str, env: dict[str, str], into: Path) -> list[str]:
    """Write stripped copies of the image's shared libraries under `into`, at their paths
    relative to /; the paths (relative to /) of the files written."""
    archive = subprocess.run(
        [cli, *RUN_AS_ROOT, "sh", tag, "-c", LIST_AND_TAR],
        env=env,
        capture_output=True,
        check=True,
        timeout=300,
    ).stdout
    strip, readelf = binutils()
    written = []
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
            if done.returncode != 0 or saving < MIN_SAVING_BYTES or _patched(readelf, target):
                target.unlink()
                continue
            written.append(member.name)
    return written


def load_name(path: str) -> str:
    """How LOAD_EACH loads a file: the dotted module name of an extension module in
    site-packages (`uvloop/loop.cpython-311-x86_64-linux-gnu.so` -> `uvloop.loop`), else its
    absolute path."""
    extension = ".cpython-" in path or path.endswith(".abi3.so")
    if path.startswith(SITE_PACKAGES) and extension:
        relative = path.removeprefix(SITE_PACKAGES)
        return relative.split(".", 1)[0].replace("/", ".")
    return "/" + path


def check_loads(cli: str, tag: str, env: dict[str, str], paths: list[str]) -> None:
    """Load every stripped file in the built image; raise with the image's error if one fails."""
    result = subprocess.run(
        [cli, *RUN_AS_ROOT, "python", tag, "-c", LOAD_EACH, *(load_name(path) for path in paths)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0 or result.stdout.strip() != str(len(paths)):
        raise RuntimeError(f"a stripped library does not load in {tag}:\n{result.stderr[-2000:]}")
