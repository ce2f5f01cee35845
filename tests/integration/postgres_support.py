"""A real PostgreSQL server for a test: Debian's package, on a port and data directory of the
test's own, stopped (and restartable) by the test.

PostgreSQL's tools refuse to run as root, so they run as the `postgres` user the package
creates, on a data directory that user owns. The server listens on 127.0.0.1 only, trusts
local connections (a throwaway database) and keeps its socket in the data directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support import ensure_debian_packages
from tools.local_server import HOST, free_port


def _bin_dir() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name)
    if not versions:
        raise RuntimeError("PostgreSQL is not installed under /usr/lib/postgresql")
    return versions[-1]


@dataclass
class PostgresServer:
    data_dir: Path
    port: int
    bin_dir: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/iris"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin_dir / tool), *args],
            check=True,
            timeout=timeout,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses={HOST} -k {self.data_dir}"
        log = str(self.data_dir / "server.log")
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs, and delete its data directory."""
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin_dir / "pg_ctl"), "-D",
             str(self.data_dir), "-m", "immediate", "-w", "stop"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.data_dir, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """A fresh PostgreSQL cluster with an empty database `iris`, started. Its directory is
    under /tmp, not pytest's (which only root may enter); `remove()` deletes it."""
    ensure_debian_packages("postgresql")
    data_dir = Path(tempfile.mkdtemp(prefix="iris-postgres-"))
    shutil.chown(data_dir, "postgres", "postgres")
    os.chmod(data_dir, 0o700)
    server = PostgresServer(data_dir, free_port(), _bin_dir())
    server._run("initdb", "-D", str(data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    server.start()
    server._run("createdb", "-h", HOST, "-p", str(server.port), "-U", "postgres", "iris")
    return server
