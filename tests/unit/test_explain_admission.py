"""Admission control counts an explanation as the work it is: POST /explain takes
settings.explain_admission_cost places of the limit, a prediction one."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iris_service.http.admission import COSTS, AdmissionControlMiddleware, InFlight
from iris_service.http.middleware import RequestMonitoringMiddleware
from iris_service.names import PREDICTION_PATHS
from iris_service.settings import settings

RELEASE = asyncio.Event()


async def answer(request: Request) -> JSONResponse:
    if (await request.json()).get("wait"):
        await RELEASE.wait()
    return JSONResponse({"class_name": "setosa", "model_tag": "iris-classifier:t1"})


def _client(limit: int, counter: InFlight) -> httpx.AsyncClient:
    app = Starlette(
        routes=[Route(path, answer, methods=["POST"]) for path in ("/predict", "/explain")]
    )
    guarded = RequestMonitoringMiddleware(
        AdmissionControlMiddleware(app, limit=limit, counter=counter)
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://t")


def test_explain_is_a_prediction_route_that_costs_more_than_one_place() -> None:
    assert "/explain" in PREDICTION_PATHS
    assert COSTS["/explain"] == settings.explain_admission_cost > 1


async def test_an_explanation_takes_its_cost_in_places_and_gives_them_back() -> None:
    RELEASE.clear()
    counter = InFlight()
    limit = settings.explain_admission_cost + 1
    async with _client(limit, counter) as client:
        held = asyncio.create_task(client.post("/explain", json={"wait": 1}))
        await asyncio.sleep(0.05)
        assert counter.count == settings.explain_admission_cost
        # One place is left: a prediction fits, a second explanation does not.
        second = await client.post("/explain", json={})
        predicted = await client.post("/predict", json={})
        RELEASE.set()
        assert (await held).status_code == 200
        after = await client.post("/explain", json={})
    assert second.status_code == 429 and second.json()["error"] == "too_many_requests"
    assert (
        f"takes {settings.explain_admission_cost} of the {limit} places" in second.json()["detail"]
    )
    assert second.headers["retry-after"] == "1"
    assert predicted.status_code == 200
    assert after.status_code == 200 and counter.count == 0


async def test_a_cost_above_the_limit_still_admits_one_request_alone() -> None:
    counter = InFlight()
    async with _client(1, counter) as client:
        alone = await client.post("/explain", json={})
    assert alone.status_code == 200 and counter.count == 0
