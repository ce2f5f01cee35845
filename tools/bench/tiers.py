"""The `tiers` shape measured beside `single` (part of `make bench`; alone: `make bench-tiers`).

Runner-bound work only: POST /predict_batch of 1,000 flowers, random forest (the costly
model the runner tier is for), every request sent to the runner (IRIS_RUNNER_MIN_ROWS=2).
For `single` (`bentoml serve`: API workers and runner in one server, a Unix socket between
them) and for `tiers` with 1 and 2 runner replicas (tools/serve_tiers.py: separate
`start-http-server` processes, the runners behind an nginx `stream` balancer):

- throughput at `--connections` connections, and p50/p99;
- the latency at 1 connection, whose difference to `single` is what the extra hop (TCP
  through the balancer instead of a Unix socket) adds;
- spread: with 2 replicas, one killed and started again under load, the share of runner
  calls the restarted replica takes in the next run, with the runner's bounded connection
  life (default) and with connections kept for ever (what a Kubernetes Service gives a
  replica the HPA adds).

Same-host figures on this machine's cores: they show the mechanism, not scale-out (every
process shares the same CPUs). Writes reports/bench-tiers.{json,md}.

    python -m tools.bench.tiers --duration 15 --connections 8
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from iris_pipeline.paths import REPORTS_DIR, STATE_DIR
from tools.local_server import LocalServer, ProjectState, bento_server
from tools.serve_tiers import Tiers, serve_tiers

from .load import LoadResult, run_wrk
from .models import ensure_trained
from .payloads import batch_body

logger = logging.getLogger("tools.bench.tiers")

BATCH_FLOWERS = 1000
FAMILY = "random_forest"
# Connections kept "for ever" by the runner: what the spread run compares against.
FOREVER = {"IRIS_RUNNER_CONNECTION_MAX_REQUESTS": "1000000000"}
FOREVER_AGE = {"IRIS_RUNNER_CONNECTION_MAX_AGE_SECONDS": "3600"}


def runner_calls(runner: LocalServer) -> float:
    """Calls the runner replica answered 200 (its own /metrics)."""
    with urllib.request.urlopen(f"{runner.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "bentoml_service_request_total"
        and sample.labels.get("endpoint") == "/predict_champion"
        and sample.labels.get("http_response_code") == "200"
    )


def summary(result: LoadResult) -> dict[str, Any]:
    return {
        "requests_per_s": round(result.requests_per_s, 1),
        "flowers_per_s": round(result.requests_per_s * BATCH_FLOWERS),
        "p50_ms": result.latency_ms["p50"],
        "p99_ms": result.latency_ms["p99"],
        "errors": result.errors,
    }


def measure(url: str, bodies: list[str], args: argparse.Namespace) -> dict[str, Any]:
    run_wrk(url, "/predict_batch", bodies, args.warmup, args.connections)
    loaded = run_wrk(url, "/predict_batch", bodies, args.duration, args.connections)
    single = run_wrk(url, "/predict_batch", bodies, args.duration, 1)
    return {"loaded": summary(loaded), "one_connection": summary(single)}


def spread_after_restart(
    state: ProjectState, log_dir: Path, bodies: list[str], args: argparse.Namespace, **env: str
) -> dict[str, Any]:
    """Share of runner calls the restarted replica takes while load continues."""
    with serve_tiers(state, log_dir, 2, **env) as tiers:
        run_wrk(tiers.api.url, "/predict_batch", bodies, args.warmup, args.connections)
        outcome: dict[str, LoadResult] = {}

        def load() -> None:
            outcome["run"] = run_wrk(
                tiers.api.url, "/predict_batch", bodies, args.duration + 8, args.connections
            )

        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(2)
        tiers.kill_runner(0)
        tiers.restart_runner(0)
        before = [runner_calls(r) for r in tiers.runners]
        loader.join()
        after = [runner_calls(r) for r in tiers.runners]
    calls = [a - b for a, b in zip(after, before, strict=True)]
    return {
        "restarted_replica_share": round(calls[0] / max(1.0, sum(calls)), 3),
        "calls_after_restart": calls,
        "errors": outcome["run"].errors,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    state = ProjectState(args.state_dir)
    model = ensure_trained(state, FAMILY)
    env = {"IRIS_MODEL_TAG": model.tag, "IRIS_RUNNER_MIN_ROWS": "2"}
    bodies = [batch_body("service", BATCH_FLOWERS, offset) for offset in (0, 50, 100)]
    log_dir = args.state_dir / "tiers-logs"
    shapes: dict[str, Callable[[], AbstractContextManager[Any]]] = {
        "single": lambda: bento_server(state, log_dir, **env),
        "tiers, 1 runner replica": lambda: serve_tiers(state, log_dir, 1, **env),
        "tiers, 2 runner replicas": lambda: serve_tiers(state, log_dir, 2, **env),
    }
    results: dict[str, Any] = {"model": model.tag, "batch_flowers": BATCH_FLOWERS}
    results["connections"] = args.connections
    results["shapes"] = {}
    for name, start in shapes.items():
        logger.info("measuring %s", name)
        with start() as served:
            url = served.api.url if isinstance(served, Tiers) else served.url
            results["shapes"][name] = measure(url, bodies, args)
    if args.spread:
        logger.info("measuring the spread after a restart")
        results["spread"] = {
            "bounded connection life": spread_after_restart(state, log_dir, bodies, args, **env),
            "connections kept for ever": spread_after_restart(
                state, log_dir, bodies, args, **env, **FOREVER, **FOREVER_AGE
            ),
        }
    single = results["shapes"]["single"]["one_connection"]["p50_ms"]
    tiers = results["shapes"]["tiers, 1 runner replica"]["one_connection"]["p50_ms"]
    results["extra_hop_p50_ms"] = round(tiers - single, 2)
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Tiers beside single: runner-bound batches of {results['batch_flowers']} flowers",
        "",
        f"Model {results['model']}; same host, shared cores: the mechanism, not scale-out.",
        "",
        f"| shape | req/s at {results['connections']} conn. | flowers/s | p50 ms | p99 ms "
        "| errors | p50 ms at 1 conn. |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, shape in results["shapes"].items():
        loaded, one = shape["loaded"], shape["one_connection"]
        lines.append(
            f"| {name} | {loaded['requests_per_s']} | {loaded['flowers_per_s']} | "
            f"{loaded['p50_ms']} | {loaded['p99_ms']} | {loaded['errors']} | {one['p50_ms']} |"
        )
    lines += [
        "",
        f"Extra hop at 1 connection (p50, tiers - single): {results['extra_hop_p50_ms']} ms",
    ]
    for name, spread in results.get("spread", {}).items():
        lines.append(
            f"- {name}: the restarted replica took {spread['restarted_replica_share']:.0%} "
            f"of the runner calls after its restart (calls {spread['calls_after_restart']}, "
            f"errors {spread['errors']})"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15, help="seconds per load run")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up seconds before a run")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--no-spread", dest="spread", action="store_false")
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR)
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR / "bench")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    results = run(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "bench-tiers.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (args.out_dir / "bench-tiers.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
