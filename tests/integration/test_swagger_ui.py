"""The Swagger UI at / in a real headless Chromium: expand POST /predict, try it, execute.

Debian's chromium, driven by the Python playwright package (its own browser download does
not work here, so it launches that executable). Saves reports/swagger-ui.png.
"""

from __future__ import annotations

import json

import pytest

from iris_pipeline.paths import PROJECT_ROOT
from iris_service.http.api_docs import API_VERSION, PAGE_TITLE
from iris_service.names import CLASS_NAMES
from tests.support import ensure_debian_packages
from tools.local_server import LocalServer

pytestmark = pytest.mark.server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.mark.timeout(150)
def test_swagger_ui_try_it_out_answers_a_class(server: LocalServer) -> None:
    ensure_debian_packages("chromium")
    from playwright.sync_api import expect, sync_playwright

    screenshot = PROJECT_ROOT / "reports" / "swagger-ui.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True, timeout=60_000
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.set_default_timeout(30_000)
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            page.goto(server.url + "/", wait_until="networkidle")
            assert page.title() == PAGE_TITLE  # not "BentoML Prediction Service"

            # The page explains itself: title, version and the service's own description.
            expect(page.locator(".info .title")).to_contain_text("IrisClassifier")
            expect(page.locator(".info .title")).to_contain_text(API_VERSION)
            description = page.locator(".info .description")
            expect(description.locator("h1")).to_have_text("Iris classifier")
            expect(description).to_contain_text("Classifies Iris flowers")

            operation = page.locator(".opblock-post").filter(
                has=page.locator('.opblock-summary-path[data-path="/predict"]')
            )
            operation.locator(".opblock-summary").click()
            operation.get_by_role("button", name="Try it out").click()
            body = operation.locator("textarea.body-param__text")
            example = json.loads(body.input_value())
            assert example == {
                "sepal_length": 5.1,
                "sepal_width": 3.5,
                "petal_length": 1.4,
                "petal_width": 0.2,
            }
            operation.get_by_role("button", name="Execute").click()

            live = operation.locator(".live-responses-table")
            status = live.locator("tr.response td.response-col_status").first
            expect(status).to_have_text("200", timeout=30_000)
            answer = live.locator("tr.response .response-col_description pre").first
            expect(answer).to_contain_text("class_name", timeout=30_000)
            response = json.loads(answer.inner_text())
            assert response["class_name"] in CLASS_NAMES
            assert response["class_name"] == "setosa"

            # Description, the expanded operation and its live answer in one picture.
            page.set_viewport_size({"width": 1280, "height": 2000})
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    # Everything the page loaded, and every call it made, went to the service itself: no
    # tag manager, no CDN, no online validator; the page works on an offline network.
    assert f"{server.url}/docs.json" in requested
    assert any("/static_content/swagger-ui-bundle.js" in url for url in requested)
    elsewhere = [url for url in requested if not url.startswith(server.url + "/")]
    assert elsewhere == [], elsewhere
