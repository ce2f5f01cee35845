"""CPU time, resident memory and TCP connections of a server's whole process tree (psutil).

A server is a process group: a supervisor (bentoml's arbiter, uvicorn's or mlflow's parent)
and its worker processes. While a load run is in flight a background thread samples every
process of the tree (new workers included): peak RSS per process and, now and then, the
established connections to the server's port held by each process (how the kernel split
the client connections across workers). CPU time is the difference of user+system time
of every process between start() and stop().
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil

BYTES_PER_MB = 1024 * 1024
RSS_INTERVAL_S = 0.5
# The API services of the BentoML servers under test (ours, the minimal one).
API_SERVICES = ("IrisClassifier", "MinimalIris")
CONNECTIONS_EVERY = 4  # sample connections every 4th RSS sample (every 2 s), first at 1 s


@dataclass
class ProcessUsage:
    pid: int
    role: str
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    connections: int = 0  # the largest count seen in one sample


@dataclass
class TreeUsage:
    cpu_s: float
    processes: list[ProcessUsage] = field(default_factory=list)

    @property
    def peak_rss_mb_per_process(self) -> float:
        return max((p.peak_rss_mb for p in self.processes), default=0.0)

    @property
    def rss_mb_total(self) -> float:
        return sum(p.peak_rss_mb for p in self.processes)

    @property
    def api_worker_processes(self) -> int:
        """Processes that answer requests: a BentoML server's API service workers (the
        runner is not one), uvicorn's spawned workers, else the one server process."""
        roles = [p.role for p in self.processes]
        for service in API_SERVICES:
            if f"bentoml worker {service}" in roles:
                return roles.count(f"bentoml worker {service}")
        return roles.count("uvicorn worker") or 1

    @property
    def connection_split(self) -> list[int]:
        """Client connections held by each process that held any, largest first."""
        return sorted((p.connections for p in self.processes if p.connections), reverse=True)


def role_of(process: psutil.Process) -> str:
    """A short human label from the command line (e.g. 'bentoml serve', 'worker IrisClassifier')."""
    try:
        words = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    text = " ".join(words)
    if "_bentoml_impl.worker" in text or "bentoml_impl.worker" in text:
        if "--service-name" in words[:-1]:
            return f"bentoml worker {words[words.index('--service-name') + 1]}"
        return "bentoml worker"
    if "multiprocessing.spawn" in text:
        return "uvicorn worker"
    for marker in ("bentoml serve", "uvicorn", "mlflow", "multiprocessing"):
        if marker in text:
            return marker
    return words[0].rsplit("/", 1)[-1] if words else "?"


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_s(process: psutil.Process) -> float | None:
    try:
        times = process.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return times.user + times.system


class ProcessTreeMonitor:
    """start() before the load, stop() after it; thread-safe enough for one sampler."""

    def __init__(self, root_pid: int, port: int) -> None:
        self.root = psutil.Process(root_pid)
        self.port = port
        self._usage: dict[int, ProcessUsage] = {}
        self._processes: dict[int, psutil.Process] = {}
        self._cpu_at_start: dict[int, float] = {}
        self._last_cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, daemon=True)

    def start(self) -> None:
        for process in _tree(self.root):
            cpu = _cpu_s(process)
            if cpu is not None:
                self._track(process)
                self._cpu_at_start[process.pid] = cpu
        self._sample(with_connections=False)
        self._thread.start()

    def stop(self) -> TreeUsage:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample(with_connections=False)
        total = 0.0
        for pid, process in self._processes.items():
            cpu = _cpu_s(process)
            if cpu is None:  # the process ended during the run: its last sampled value
                cpu = self._last_cpu.get(pid, 0.0)
            used = max(0.0, cpu - self._cpu_at_start.get(pid, 0.0))
            self._usage[pid].cpu_s = used
            total += used
        return TreeUsage(cpu_s=total, processes=list(self._usage.values()))

    def _track(self, process: psutil.Process) -> None:
        if process.pid not in self._processes:
            self._processes[process.pid] = process
            self._usage[process.pid] = ProcessUsage(process.pid, role_of(process))

    def _sample_loop(self) -> None:
        count = 0
        while not self._stop.wait(RSS_INTERVAL_S):
            count += 1
            self._sample(with_connections=count % CONNECTIONS_EVERY == 2)

    def _sample(self, with_connections: bool) -> None:
        for process in _tree(self.root):
            self._track(process)
            usage = self._usage[process.pid]
            try:
                with process.oneshot():
                    rss_mb = process.memory_info().rss / BYTES_PER_MB
                    cpu = process.cpu_times()
                    self._last_cpu[process.pid] = cpu.user + cpu.system
                    if with_connections:
                        usage.connections = max(usage.connections, self._connections(process))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            usage.peak_rss_mb = max(usage.peak_rss_mb, rss_mb)

    def _connections(self, process: psutil.Process) -> int:
        return sum(
            1
            for connection in process.net_connections(kind="tcp")
            if connection.status == psutil.CONN_ESTABLISHED
            and connection.laddr
            and connection.laddr.port == self.port
        )


def wait_quiet(seconds: float) -> None:
    """A short pause between runs so one run's tail does not leak into the next."""
    time.sleep(seconds)
