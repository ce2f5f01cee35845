"""Run the shipped nginx front (deploy/nginx/nginx.conf) locally, in front of a served instance.

The shipped file is rendered with other ports and paths (listen on 127.0.0.1:PORT, proxy to
the backend's port, pid, logs and temp files in a run folder) and started through
tools.local_server like every other server here, in the foreground (`daemon off`), so that
stopping it stops its workers. Every other line, limits and timeouts included, stays as
shipped: what the tests and the overload benchmark exercise is what is deployed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from iris_pipeline.paths import PROJECT_ROOT, TOOLS_DIR
from tools.local_server import HOST, LocalServer, free_port, start_server

NGINX_CONF = PROJECT_ROOT / "deploy" / "nginx" / "nginx.conf"
DEBIAN_PACKAGE = "nginx-light"
SERVICE_SLOTS = re.compile(r"limit_conn iris_service_slots \d+;")
PER_CLIENT_LIMITS = r"(?m)^\s*limit_(conn iris_per_client|req zone=iris_rate_per_client).*\n"


def ensure_nginx() -> str:
    """Path of Debian's nginx, installed with the project's script when missing."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found is None:
        script = TOOLS_DIR / "ensure-debian-packages.sh"
        subprocess.run(["bash", str(script), DEBIAN_PACKAGE], check=True, timeout=900)
        found = shutil.which("nginx", path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError("nginx is not installed and could not be installed")
    return found


def directive(name: str, text: str | None = None) -> str:
    """The value of directive `name` (e.g. "client_max_body_size", or "limit_conn
    iris_per_client" for one zone) in the shipped file; every occurrence must agree."""
    text = NGINX_CONF.read_text() if text is None else text
    values = set(re.findall(rf"(?m)^\s*{re.escape(name)}\s+([^;]*);", text))
    if len(values) != 1:
        raise ValueError(f"{name}: expected one value in {NGINX_CONF.name}, found {values}")
    return values.pop()


def nginx_size(value: str) -> int:
    """Bytes of an nginx size ("256k", "1m", "512")."""
    units = {"k": 1024, "m": 1024 * 1024, "g": 1024**3}
    unit = value[-1].lower()
    return int(value[:-1]) * units[unit] if unit in units else int(value)


def _replace(text: str, pattern: str, replacement: str, count: int = 1) -> str:
    """`pattern` replaced; fails when the shipped file no longer has it `count` times."""
    new, found = re.subn(pattern, replacement, text)
    if found != count:
        raise ValueError(f"{NGINX_CONF}: expected {count} x {pattern!r}, found {found}")
    return new


def render(
    listen_port: int,
    backend_port: int,
    run_dir: Path,
    service_slots: int | None = None,
    per_client_limits: bool = True,
) -> Path:
    """The shipped configuration for 127.0.0.1:listen_port -> 127.0.0.1:backend_port, with its
    runtime files under `run_dir`. `service_slots` overrides the service-wide limit of
    prediction requests in flight (it must match the backend's admission limit); without
    `per_client_limits` (a benchmark whose many clients all come from 127.0.0.1) only the
    service-wide limit refuses."""
    run_dir.mkdir(parents=True, exist_ok=True)
    text = NGINX_CONF.read_text()
    text = _replace(text, r"(?m)^\s*listen 8080;", f"        listen {HOST}:{listen_port};")
    text = _replace(text, r"server 127\.0\.0\.1:3000;", f"server {HOST}:{backend_port};")
    text = _replace(text, r"(?m)^pid .*;$", f"pid {run_dir / 'nginx.pid'};")
    text = _replace(text, r"(?m)^error_log .*;$", f"error_log {run_dir / 'error.log'} warn;")
    temp_paths = "".join(
        f"\n    {kind}_temp_path {run_dir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = _replace(text, r"(?m)^http \{$", "http {" + temp_paths)
    if service_slots is not None:
        text = _replace(
            text, SERVICE_SLOTS.pattern, f"limit_conn iris_service_slots {service_slots};", 1
        )
    if not per_client_limits:
        text = _replace(text, PER_CLIENT_LIMITS, "", 4)
    conf = run_dir / "nginx.conf"
    conf.write_text(text)
    return conf


def check(conf: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` of a rendered configuration."""
    return subprocess.run(
        [ensure_nginx(), "-t", "-q", "-e", "stderr", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@contextmanager
def nginx_front(
    backend_port: int,
    run_dir: Path,
    service_slots: int | None = None,
    per_client_limits: bool = True,
) -> Iterator[LocalServer]:
    """The shipped nginx front on a free 127.0.0.1 port, proxying to `backend_port`; ready
    once the backend's /readyz answers 200 through it; stopped when the block ends."""
    port = free_port()
    conf = render(port, backend_port, run_dir, service_slots, per_client_limits)
    command = [ensure_nginx(), "-e", "stderr", "-c", str(conf), "-g", "daemon off;"]
    server = start_server(command, {}, port, run_dir / "nginx.log", ready_timeout=30)
    try:
        yield server
    finally:
        server.stop()
