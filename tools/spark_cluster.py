"""A Spark standalone cluster on 127.0.0.1: one master and N workers, started and stopped.

The PyPI pyspark wheel has Spark's jars and `bin/spark-class` but not `sbin/start-master.sh`,
so each daemon is started with `spark-class` directly:

    spark-class org.apache.spark.deploy.master.Master --host 127.0.0.1 --port P --webui-port W
    spark-class org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --cores 1 --memory 1g ...

Everything binds 127.0.0.1 (SPARK_LOCAL_IP and the explicit host options), each daemon runs
in a process group of its own and logs to a file, and stopping the cluster stops every
process it started. Used by tests/integration/test_batch_scoring.py and tools/score_bench.py.

python -m tools.spark_cluster --workers 2   # starts, prints the master URL, stops on Ctrl-C
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from tools.local_server import HOST, free_port
from tools.processes import stop_process_group

START_TIMEOUT_S = 90.0
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def spark_class() -> Path:
    """`spark-class` of the installed pyspark."""
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-class"


def spark_env(work_dir: Path, java_options: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": HOST,
        "SPARK_LOCAL_DIRS": str(work_dir / "local"),
        "SPARK_LOG_DIR": str(work_dir / "logs"),
        "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
    }
    if java_options:
        env["SPARK_DAEMON_JAVA_OPTS"] = java_options  # the master's and workers' JVMs
    return env


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> None:
        stop_process_group(self.process, timeout)


@dataclass
class Cluster:
    master_url: str
    master_ui_port: int
    daemons: list[Daemon] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(f"== {d.log_path.name}\n{d.log()[-3000:]}" for d in self.daemons)


def _start(args: list[str], env: dict[str, str], log_path: Path) -> Daemon:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(spark_class()), *args],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Daemon(process, log_path)


def _wait_for(daemon: Daemon, pattern: str, timeout: float, count: int = 1) -> None:
    """Until the daemon's log matches `pattern` `count` times (the daemon says it is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise RuntimeError(f"{daemon.log_path.name} exited:\n{daemon.log()[-3000:]}")
        if len(re.findall(pattern, daemon.log())) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{daemon.log_path.name}: no {pattern!r} after {timeout} s")


@contextmanager
def standalone_cluster(
    work_dir: Path,
    workers: int = 2,
    cores: int = 1,
    memory: str = "1g",
    java_options: str | None = None,
) -> Iterator[Cluster]:
    """A master and `workers` workers on 127.0.0.1, each worker with `cores` and `memory`
    (`java_options`: HotSpot options of the daemons, e.g. tools/spark_jvm.py's); yields once
    every worker has registered with the master."""
    env = spark_env(work_dir, java_options)
    (work_dir / "local").mkdir(parents=True, exist_ok=True)
    port, ui_port = free_port(), free_port()
    with ExitStack() as stack:
        master = _start(
            [MASTER_CLASS, "--host", HOST, "--port", str(port), "--webui-port", str(ui_port)],
            env,
            work_dir / "logs" / "master.log",
        )
        stack.callback(master.stop)
        cluster = Cluster(f"spark://{HOST}:{port}", ui_port, [master])
        _wait_for(master, r"I have been elected leader", START_TIMEOUT_S)
        for index in range(workers):
            worker_dir = work_dir / f"worker-{index}"
            worker = _start(
                [
                    WORKER_CLASS,
                    "--host",
                    HOST,
                    "--port",
                    str(free_port()),
                    "--webui-port",
                    str(free_port()),
                    "--cores",
                    str(cores),
                    "--memory",
                    memory,
                    "--work-dir",
                    str(worker_dir),
                    cluster.master_url,
                ],
                env,
                work_dir / "logs" / f"worker-{index}.log",
            )
            stack.callback(worker.stop)
            cluster.daemons.append(worker)
        _wait_for(master, r"Registering worker", START_TIMEOUT_S, count=workers)
        yield cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=Path("state/spark-cluster"))
    args = parser.parse_args()
    with standalone_cluster(args.work_dir.resolve(), args.workers) as cluster:
        print(f"master {cluster.master_url}; logs in {args.work_dir / 'logs'}; Ctrl-C stops")
        with suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
