"""Build the image of the current tree once per session and run containers of it.

Daemonless machines (no Docker engine) get their tools from tools/container/install-tools.sh,
so the container tests run, not skip, wherever those can be installed (root or sudo, apt).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence

import pytest
import requests

from tools import containers
from tools.local_server import ProjectState, free_port

READY_TIMEOUT_S = 120
BUILD_TIMEOUT_S = 1500  # cold: apt install + debootstrap + PyPI downloads
Image = tuple[str, dict[str, str], str]  # backend, environment, tag


def can_set_up(backend: str) -> str | None:
    """Why the image cannot be built here, or None."""
    if not sys.platform.startswith("linux"):
        return "container builds need Linux"
    if backend == "docker":
        return None
    if not shutil.which("podman") or not shutil.which("buildah"):
        if os.geteuid() != 0 and not shutil.which("sudo"):
            return "buildah/podman missing and no root/sudo to install them"
        if not shutil.which("apt-get"):
            return "buildah/podman missing and no apt-get to install them"
    return None


@contextlib.contextmanager
def built_image(state: ProjectState) -> Iterator[Image]:
    """The image built from the current tree with `state`'s champion packed; removed after."""
    backend = containers.pick_backend()
    reason = can_set_up(backend)
    if reason:
        pytest.skip(reason)
    env = containers.setup(backend)  # installs tools, writes configs, makes the base image
    env.update(state.env())  # the session's isolated BentoML store with its model
    start = time.monotonic()
    tag = containers.build(backend, env, record=False)
    print(f"\nimage {tag} built in {time.monotonic() - start:.0f} s")
    try:
        yield backend, env, tag
    finally:
        containers.remove(backend, env, container=None, image=tag)
        subprocess.run(
            [containers.bentoml_bin(), "delete", "-y", tag],
            env=env,
            capture_output=True,
            timeout=60,
        )


def wait_ready(base: str, timeout_s: float = READY_TIMEOUT_S) -> float | None:
    """Seconds until GET /readyz answered 200, or None after `timeout_s`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:  # not listening yet, or hanging while starting
            pass
        time.sleep(0.25)
    return None


def container_logs(cli: str, name: str, env: dict[str, str]) -> str:
    logs = subprocess.run([cli, "logs", name], env=env, capture_output=True, text=True, timeout=30)
    return f"{logs.stdout[-4000:]}\n{logs.stderr[-4000:]}"


@contextlib.contextmanager
def running_container(
    backend: str, env: dict[str, str], tag: str, options: Sequence[str] = (), rm: bool = True
) -> Iterator[tuple[str, str, str]]:
    """A detached container of `tag` on a free 127.0.0.1 port, ready; removed after.
    Yields (base URL, container CLI, container name)."""
    cli = containers.runner_cli(backend)
    name = f"iris-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    cmd = containers.run_command(backend, tag, port, name=name, detach=True, options=options, rm=rm)
    start = time.monotonic()
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=60)
    base = f"http://127.0.0.1:{port}"
    try:
        if wait_ready(base) is None:
            pytest.fail(
                f"container not ready after {READY_TIMEOUT_S} s:\n" + container_logs(cli, name, env)
            )
        print(f"\ncontainer ready {time.monotonic() - start:.1f} s after `{cli} run`")
        yield base, cli, name
    finally:
        containers.remove(backend, env, container=name, image=None)
