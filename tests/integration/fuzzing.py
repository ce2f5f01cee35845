"""Property-based fuzzing of one API operation from the service's own OpenAPI document.

Runs in a worker process (the test spreads operations over the 2 cores); problems are
collected, not raised, so one finding does not stop the run or trigger slow shrinking.
"""

from __future__ import annotations

from collections import Counter

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

ERROR_KEYS = {"error", "detail", "request_id"}


def problem_with(response: requests.Response) -> str | None:
    """Never a 5xx; every 4xx in the documented error shape with its request id."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            return f"{response.status_code} without a JSON body: {response.text[:300]}"
        if not isinstance(body, dict) or set(body) != ERROR_KEYS:
            return f"{response.status_code} not in the error shape: {response.text[:300]}"
        if body["request_id"] != response.headers.get("x-request-id"):
            return f"{response.status_code} request id mismatch"
    return None


def fuzz_operation(
    base_url: str, path: str, plan: dict[str, int], headers: dict[str, str]
) -> tuple[Counter, list[str]]:
    """`plan` = {generation mode: examples}; returns (status counts, problems)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/docs.json")
    operation = schema[path]["POST"]
    session = requests.Session()
    statuses: Counter = Counter()
    problems: list[str] = []
    for mode, examples in plan.items():
        _fuzz_mode(operation, base_url, mode, examples, headers, session, statuses, problems)
    return statuses, problems


def _fuzz_mode(
    operation: schemathesis.APIOperation,
    base_url: str,
    mode: str,
    examples: int,
    headers: dict[str, str],
    session: requests.Session,
    statuses: Counter,
    problems: list[str],
) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases every run (it runs in a worker process of its own)
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
    def call(case: schemathesis.Case) -> None:
        kwargs = case.as_transport_kwargs(base_url=base_url)
        kwargs["headers"] = {**(kwargs.get("headers") or {}), **headers}
        try:
            response = session.request(**kwargs, timeout=10)
        except requests.RequestException as exc:  # a hang or a dropped connection
            problems.append(f"{operation.path} {mode}: {type(exc).__name__}: {exc}")
            return
        statuses[response.status_code] += 1
        problem = problem_with(response)
        if problem:
            problems.append(f"{operation.path} {mode}: {problem}")

    call()
