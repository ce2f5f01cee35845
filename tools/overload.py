"""Overload benchmark: admitted throughput at the admission limit and under a flood.

A flood is `flood_factor` x the admission limit of clients that retry at once (wrk: every
connection sends its next request as soon as an answer, a 429 included, arrives). It is
measured twice on one `bentoml serve`: clients straight to the service (refused by its own
admission control, iris_service/http/admission.py, after BentoML's per-request work) and through
the shipped nginx front (deploy/nginx/nginx.conf, whose service-wide `limit_conn` refuses the
excess in nginx before it reaches Python). Every run is bounded in time, on 127.0.0.1.

    python -m tools.overload --out-dir reports      # reports/overload.{json,md}
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from iris_pipeline.paths import REPORTS_DIR
from tools.bench.load import LoadResult, run_wrk
from tools.bench.payloads import single_bodies
from tools.front_proxy import nginx_front
from tools.local_server import LocalServer, ProjectState, bento_server

TARGET_SHARE = 0.70  # admitted under the flood / admitted without it, at least


@dataclass
class Run:
    """One bounded wrk run and what it admitted."""

    route: str  # "direct" or "nginx"
    clients: int
    seconds: float
    answers: int
    refused: int  # non-2xx answers (429 from the admission limit)
    socket_errors: int
    p50_ms: float
    p99_ms: float
    loadgen_cpu_s: float

    @property
    def admitted_per_s(self) -> float:
        return (self.answers - self.refused) / self.seconds if self.seconds else 0.0

    @classmethod
    def of(cls, route: str, clients: int, result: LoadResult) -> Run:
        return cls(
            route=route,
            clients=clients,
            seconds=round(result.duration_s, 2),
            answers=result.requests,
            refused=result.non_2xx,
            socket_errors=sum(result.socket_errors.values()),
            p50_ms=result.latency_ms["p50"],
            p99_ms=result.latency_ms["p99"],
            loadgen_cpu_s=round(result.loadgen_cpu_s, 2),
        )


def _load(server: LocalServer, route: str, clients: int, seconds: float) -> Run:
    result = run_wrk(server.url, "/predict", single_bodies("service"), seconds, clients)
    return Run.of(route, clients, result)


def measure(
    limit: int,
    flood_factor: int,
    seconds: float,
    warmup_s: float,
    state: ProjectState | None = None,
) -> list[Run]:
    """At the limit, then flooded: straight to the service, then through the nginx front.
    `state`: the model store to serve from (None: the environment's, as `make` sets it)."""
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="overload-") as scratch:
        scratch_dir = Path(scratch)
        server_env = {"IRIS_MAX_CONCURRENT_REQUESTS": str(limit)}
        with (
            bento_server(state, scratch_dir, **server_env) as server,
            nginx_front(server.port, scratch_dir / "ng", limit, per_client_limits=False) as front,
        ):
            for route, target in (("direct", server), ("nginx", front)):
                run_wrk(target.url, "/predict", single_bodies("service"), warmup_s, limit)
                runs.append(_load(target, route, limit, seconds))
                runs.append(_load(target, route, limit * flood_factor, seconds))
    return runs


def summary(runs: list[Run], limit: int) -> dict:
    """Per route: admitted req/s at the limit and flooded, and their ratio."""
    routes: dict[str, dict] = {}
    for route in dict.fromkeys(run.route for run in runs):
        at_limit, flooded = [run for run in runs if run.route == route]
        share = flooded.admitted_per_s / at_limit.admitted_per_s if at_limit.admitted_per_s else 0
        routes[route] = {
            "admitted_per_s_at_limit": round(at_limit.admitted_per_s, 1),
            "admitted_per_s_flooded": round(flooded.admitted_per_s, 1),
            "flooded_share": round(share, 3),
            "meets_target": share >= TARGET_SHARE,
        }
    return {
        "admission_limit": limit,
        "target_share": TARGET_SHARE,
        "routes": routes,
        "runs": [asdict(run) | {"admitted_per_s": round(run.admitted_per_s, 1)} for run in runs],
    }


def markdown(report: dict) -> str:
    lines = [
        f"# Overload: admission limit {report['admission_limit']}, flood = clients retrying "
        "at once",
        "",
        "| route | clients | answers/s | admitted/s | refused | p50 ms | p99 ms | wrk CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        lines.append(
            f"| {run['route']} | {run['clients']} | {run['answers'] / run['seconds']:.0f} | "
            f"{run['admitted_per_s']:.0f} | {run['refused']} | {run['p50_ms']} | "
            f"{run['p99_ms']} | {run['loadgen_cpu_s']} |"
        )
    lines += ["", f"Admitted under the flood / at the limit (target >= {TARGET_SHARE:.0%}):", ""]
    for route, figures in report["routes"].items():
        verdict = "met" if figures["meets_target"] else "NOT met"
        lines.append(
            f"- {route}: {figures['admitted_per_s_flooded']} / "
            f"{figures['admitted_per_s_at_limit']} req/s = {figures['flooded_share']:.0%} "
            f"({verdict})"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=8, help="IRIS_MAX_CONCURRENT_REQUESTS")
    parser.add_argument("--flood-factor", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=10, help="per measured run")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR)
    args = parser.parse_args(argv)
    report = summary(measure(args.limit, args.flood_factor, args.seconds, args.warmup), args.limit)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "overload.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / "overload.md").write_text(markdown(report))
    print(markdown(report))
    # The shipped configuration is the front; the direct figures show what it protects from.
    return 0 if report["routes"]["nginx"]["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
