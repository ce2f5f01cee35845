"""Load test of the Iris service: a realistic mix of traffic, two scenarios, SLO exit code.

Scenarios (environment variable IRIS_LOAD_SCENARIO, default "typical"):
- typical: the original project's test, users waiting 1-3 s between requests (so 50 users
  send about 25 requests/s whatever the server can do: it measures latency, not capacity);
- saturation: no think time, every user sends its next request as soon as it has an answer.

Traffic mix: 85 % single predictions with measurements drawn from the Iris data set (sklearn's
bundled copy, jittered), 10 % batch predictions of 2-64 flowers, 5 % invalid requests that
count as a success only when answered 4xx.

SLO checks set Locust's exit code (1 when broken): any unexpected failure (more than
--slo-max-failure-ratio, default 0), p95 latency of all requests over --slo-p95-ms (default
100), or no request answered at all.

    IRIS_LOAD_SCENARIO=saturation locust -f locustfile.py --headless -u 50 -r 10 \
        --run-time 60s --host http://127.0.0.1:3000
(`make loadtest` starts the service itself and writes the reports.)
"""

from __future__ import annotations

import json
import logging
import os
import random
from functools import cache
from typing import Any

import gevent
from locust import FastHttpUser, between, constant, events, task
from locust.stats import CSV_STATS_INTERVAL_SEC

from iris_service.names import FEATURE_NAMES

SCENARIOS = ("typical", "saturation")
SCENARIO = os.environ.get("IRIS_LOAD_SCENARIO", "typical")
if SCENARIO not in SCENARIOS:
    raise ValueError(f"IRIS_LOAD_SCENARIO must be one of {', '.join(SCENARIOS)}, got {SCENARIO!r}")


JITTER_CM = 0.1  # standard deviation of the noise added to real measurements
MAX_BATCH = 64
logger = logging.getLogger("locustfile")


@events.init_command_line_parser.add_listener
def add_slo_arguments(parser: Any) -> None:
    parser.add_argument(
        "--slo-p95-ms",
        type=float,
        default=100.0,
        env_var="LOCUST_SLO_P95_MS",
        help="fail the run when the p95 response time of all requests exceeds this",
    )
    parser.add_argument(
        "--slo-max-failure-ratio",
        type=float,
        default=0.0,
        env_var="LOCUST_SLO_MAX_FAILURE_RATIO",
        help="fail the run when more than this share of requests failed unexpectedly",
    )


@cache
def iris_measurements() -> list[tuple[float, ...]]:
    from sklearn.datasets import load_iris

    return [tuple(float(value) for value in row) for row in load_iris().data]


def random_flower() -> dict[str, float]:
    """A real Iris flower's measurements, jittered, rounded to 0.1 mm, kept positive."""
    row = random.choice(iris_measurements())
    return {
        name: round(max(0.1, value + random.gauss(0.0, JITTER_CM)), 2)
        for name, value in zip(FEATURE_NAMES, row, strict=True)
    }


def invalid_request() -> tuple[str, str, str]:
    """(path, body, content type) of a request the service must refuse with 4xx."""
    flower = random_flower()
    kind = random.choice(
        ("negative", "missing", "string", "extra", "empty_batch", "malformed", "plain_text")
    )
    if kind == "negative":
        flower["petal_length"] = -1.0
    elif kind == "missing":
        del flower["sepal_width"]
    elif kind == "string":
        flower["sepal_length"] = str(flower["sepal_length"])  # type: ignore[assignment]
    elif kind == "extra":
        flower["colour"] = 1.0
    elif kind == "empty_batch":
        return "/predict_batch", json.dumps({"flowers": []}), "application/json"
    elif kind == "malformed":
        return "/predict", json.dumps(flower)[:-3], "application/json"
    elif kind == "plain_text":
        return "/predict", json.dumps(flower), "text/plain"
    return "/predict", json.dumps(flower), "application/json"


class IrisTraffic(FastHttpUser):
    """The traffic mix; the scenarios below only differ in think time."""

    abstract = True

    @task(85)
    def predict(self) -> None:
        with self.client.post(
            "/predict", json=random_flower(), name="/predict", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
            elif "class_name" not in (response.json() or {}):
                response.failure("answer without class_name")

    @task(10)
    def predict_batch(self) -> None:
        flowers = [random_flower() for _ in range(random.randint(2, MAX_BATCH))]
        with self.client.post(
            "/predict_batch", json={"flowers": flowers}, name="/predict_batch", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
            elif len((response.json() or {}).get("predictions", ())) != len(flowers):
                response.failure("not one prediction per flower")

    @task(5)
    def invalid(self) -> None:
        path, body, content_type = invalid_request()
        with self.client.post(
            path,
            data=body,
            headers={"Content-Type": content_type},
            name=f"{path} [invalid]",
            catch_response=True,
        ) as response:
            if 400 <= response.status_code < 500:
                response.success()  # the service refused it, as it must
            else:
                response.failure(f"invalid request answered {response.status_code}, expected 4xx")


class TypicalUser(IrisTraffic):
    """The original scenario: think time of 1-3 s between requests."""

    abstract = SCENARIO != "typical"
    wait_time = between(1, 3)


class SaturationUser(IrisTraffic):
    """No think time: finds the service's capacity and where latency breaks."""

    abstract = SCENARIO != "saturation"
    wait_time = constant(0)


@events.quitting.add_listener
def check_slo(environment: Any, **_: Any) -> None:
    """Set the exit code from the SLOs (runs on the master / local runner at the end)."""
    options = environment.parsed_options
    if options is None:
        return
    if getattr(options, "csv_prefix", None):
        # Locust's CSV writer is a greenlet that rewrites <prefix>_stats.csv once a second and
        # is not run again at shutdown, so the file can miss the last second (or, on a busy
        # machine, every request). The users have stopped: give it one more turn.
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.5)
    total = environment.stats.total
    broken = []
    if total.num_requests == 0:
        broken.append("no request was answered")
    if total.fail_ratio > options.slo_max_failure_ratio:
        broken.append(
            f"{total.num_failures} unexpected failures ({total.fail_ratio:.2%} > "
            f"{options.slo_max_failure_ratio:.2%})"
        )
    exceptions = environment.runner.exceptions if environment.runner is not None else {}
    if exceptions:
        broken.append(f"{len(exceptions)} kinds of exceptions in the user code")
    p95 = total.get_response_time_percentile(0.95) if total.num_requests else 0
    if p95 > options.slo_p95_ms:
        broken.append(f"p95 {p95:.0f} ms > {options.slo_p95_ms:.0f} ms")
    if broken:
        logger.error("SLO not met: %s", "; ".join(broken))
        environment.process_exit_code = 1
    else:
        logger.info(
            "SLO met: %d requests, 0 unexpected failures, p95 %.0f ms <= %.0f ms",
            total.num_requests,
            p95,
            options.slo_p95_ms,
        )
        environment.process_exit_code = 0
