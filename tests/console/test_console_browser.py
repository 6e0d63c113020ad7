"""The web console in a real browser: Debian's headless Chromium driven by Playwright
against a real stack of processes whose gateway requires a bearer token. In order: the
console asks for the token and refuses actions without it; import a dataset; start a
training job and watch it reach 100 %; open the model and promote it; refused canary
weights change nothing; a canary at 20 %; predictions from the page; roll back; two
versions side by side; a narrow screen. Each step asserts what the page shows and saves a
screenshot under the test's output folder (`TFMESH_CONSOLE_SCREENSHOTS` names another)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Dialog, Page, expect, sync_playwright

from cli.stack import LocalStack
from tests.support.stack import RunningStack, http_json, stack_environment

TOKEN = "console-test-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("console-stack")
    environment = stack_environment(
        home, TFMESH_GATEWAY_API_TOKEN=TOKEN, TFMESH_INFERENCE_MODELS="digits"
    )
    patch = pytest.MonkeyPatch()
    for name, value in environment.items():
        patch.setenv(name, value)
    local = LocalStack(home)
    try:
        yield RunningStack(home, local.up(), environment)
    finally:
        local.down()
        patch.undo()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TFMESH_CONSOLE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"console screenshots: {folder}")
    return folder


def gateway(stack: RunningStack) -> str:
    return f"http://{stack.address('gateway')}"


def api(stack: RunningStack, path: str, body: object = None, method: str | None = None):
    return http_json(gateway(stack) + path, body, method=method, token=TOKEN)


def accept_dialogs(page: Page, seen: list[str]) -> None:
    def accept(dialog: Dialog) -> None:
        seen.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)


def ended(job: dict) -> str:
    """The state of a job that ended; empty while it runs."""
    state = job["state"]
    return (
        state if state in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED") else ""
    )


def wait_until(condition, timeout_s: float = 120, step_s: float = 0.5):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(step_s)
    return found


def digits_version(page: Page) -> str:
    expect(page.get_by_role("button", name="Start training")).to_be_visible()
    options = page.get_by_label("Dataset version", exact=True).locator("option").all_inner_texts()
    return next(o for o in options if o.startswith("digits@"))


def test_the_console_drives_the_lifecycle(stack: RunningStack, shots: Path) -> None:
    base = f"{gateway(stack)}/ui/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        # A slow shared machine: first predictions and replayed job streams take a while.
        expect.set_options(timeout=30_000)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        dialogs: list[str] = []
        accept_dialogs(page, dialogs)

        # Without the token: the console asks for it, and actions are refused readably.
        page.goto(base + "#/datasets")
        expect(page.get_by_label("Bearer token for the gateway", exact=True)).to_be_visible()
        expect(page.locator("#token-reason")).to_contain_text("UNAUTHENTICATED")
        expect(page.get_by_test_id("error")).to_contain_text("missing or wrong bearer token")
        # The keyboard: the skip link first, then the sections.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Enter")  # to the page's content, the page staying where it is
        assert page.evaluate("document.activeElement.id") == "main"
        assert page.evaluate("location.hash") == "#/datasets"
        page.keyboard.press("Shift+Tab")  # back into the token form, just above the page
        assert page.evaluate("document.activeElement.textContent") == "Forget token"
        page.screenshot(path=shots / "01-token-asked.png")

        # With it: import a sample dataset and read its page.
        page.get_by_label("Bearer token for the gateway", exact=True).fill(TOKEN)
        page.get_by_role("button", name="Use token").click()
        expect(page.get_by_role("button", name="Import sample")).to_be_visible()
        expect(page.get_by_test_id("datasets")).to_contain_text("none")
        # A tabular sample first: a histogram per feature.
        page.get_by_label("Sample", exact=True).select_option("wine")
        page.get_by_role("button", name="Import sample").click()
        expect(page.get_by_role("heading", name="Dataset version wine@")).to_be_visible(
            timeout=60_000
        )
        statistics = page.get_by_test_id("statistics")
        expect(statistics.locator("tbody tr")).to_have_count(13)
        expect(statistics.locator("svg.hist")).to_have_count(13)
        expect(page.get_by_test_id("splits")).to_contain_text("validation")
        expect(page.get_by_test_id("labels").locator("tbody tr")).to_have_count(3)
        page.screenshot(path=shots / "02-dataset.png", full_page=False)
        # Then the digits (8 x 8 images: statistics per channel) to train on.
        page.goto(base + "#/datasets")
        page.get_by_label("Sample", exact=True).select_option("digits")
        page.get_by_role("button", name="Import sample").click()
        expect(page.get_by_role("heading", name="Dataset version digits@")).to_be_visible(
            timeout=60_000
        )
        expect(page.get_by_test_id("statistics")).to_contain_text("x[..., 0]")

        # Start a training job from the page and watch it reach 100 %.
        page.goto(base + "#/jobs")
        page.get_by_label("Dataset version", exact=True).select_option(label=digits_version(page))
        page.get_by_label("Hidden units (comma-separated)", exact=True).fill("32")
        page.get_by_label("Epochs", exact=True).fill("4")
        page.get_by_role("button", name="Start training").click()
        expect(page.get_by_test_id("progress-text")).to_have_text("100%", timeout=240_000)
        expect(page.get_by_test_id("job-state")).to_have_text("succeeded", timeout=60_000)
        expect(page.get_by_test_id("curves").locator("svg path").first).to_be_visible()
        expect(page.get_by_test_id("confusion-matrix")).to_be_visible(timeout=30_000)
        expect(page.get_by_test_id("confusion-matrix").locator("tr")).to_have_count(11)
        page.screenshot(path=shots / "03-training-job.png", full_page=True)

        # Open the model and promote v1 (confirmed in a dialog).
        page.get_by_role("link", name="digits v1").click()
        expect(page.get_by_test_id("versions")).to_contain_text("sha256:")
        page.get_by_test_id("promote-1").click()
        expect(page.get_by_test_id("aliases")).to_contain_text("production")
        assert any("Promote version 1" in text for text in dialogs)
        expect(page.get_by_test_id("audit")).to_contain_text("console")
        page.screenshot(path=shots / "04-model-promoted.png", full_page=True)

        # A second version (trained over the API) for the canary.
        _, job = api(
            stack,
            "/api/v1/jobs",
            {
                "spec": {
                    "dataset_version": page.get_by_test_id("versions")
                    .locator("a")
                    .first.inner_text(),
                    "model_name": "digits",
                    "model": {"mlp": {"hidden_units": [64]}},
                    "hyperparameters": {"epochs": 4, "learning_rate": 0.01},
                    "seed": 3,
                }
            },
            method="POST",
        )
        name = job["job"]["name"]
        state = wait_until(lambda: ended(api(stack, f"/api/v1/jobs/{name}")[1]["job"]), 240)
        assert state == "JOB_STATE_SUCCEEDED", state
        wait_until(
            lambda: any(
                "production" in v["labels"]
                for v in api(stack, "/api/v1/serving/digits")[1]
                .get("status", {})
                .get("versions", [])
            )
        )

        # Serving: refused weights change nothing; then a canary at 20 %.
        page.goto(base + "#/serving/digits")
        expect(page.get_by_test_id("serving-versions")).to_contain_text("production")
        for weight, message in (("abc", "valid integer"), ("150", "less than or equal to 100")):
            page.get_by_label("Canary version", exact=True).select_option("2")
            page.get_by_label("Traffic weight (%)", exact=True).fill(weight)
            page.get_by_role("button", name="Set canary").click()
            expect(page.get_by_test_id("action-error")).to_contain_text(message)
            expect(page.get_by_test_id("action-error")).to_contain_text("traffic_weight")
        aliases = api(stack, "/api/v1/models/digits/aliases")[1]["aliases"]
        assert [a["name"] for a in aliases] == ["production"]
        page.get_by_label("Traffic weight (%)", exact=True).fill("20")
        page.get_by_role("button", name="Set canary").click()
        expect(page.get_by_test_id("action-done")).to_contain_text("canary v2 at 20%")
        expect(page.get_by_test_id("recent-changes")).to_contain_text("20%")
        wait_until(
            lambda: "canary" in str(api(stack, "/api/v1/serving/digits")[1]["status"]["versions"])
        )

        # Predictions from the page: unpinned, pinned to v2, and a malformed row refused.
        page.goto(base + "#/try/digits")
        page.get_by_role("button", name="Predict").click()
        expect(page.get_by_test_id("predicted-class")).to_have_text("0")
        page.get_by_label("Pin a version (optional)", exact=True).fill("2")
        page.get_by_role("button", name="Predict").click()
        expect(page.get_by_test_id("served-version")).to_have_text("2")
        # An image drawn on the page: a vertical stroke, scaled to the data's 0-16 range.
        page.get_by_role("button", name="Clear drawing").click()
        box = page.get_by_test_id("sketch").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 10)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] - 10, steps=12)
        page.mouse.up()
        page.get_by_role("button", name="Use the drawing").click()
        drawn = json.loads(page.locator("#try-row").input_value())
        assert len(drawn) == 64 and 0 < max(drawn) <= 16, drawn
        assert drawn[3] > 8 and drawn[0] == 0  # the middle column inked, the edge blank
        page.get_by_role("button", name="Predict").click()
        expect(page.get_by_test_id("served-version")).to_have_text("2")
        expect(page.get_by_test_id("predicted-class")).to_have_text(re.compile(r"^\d$"))
        page.screenshot(path=shots / "06-try-it.png", full_page=True)
        page.get_by_label("Pin a version (optional)", exact=True).fill("")
        page.locator("#try-row").fill("[1, 2,")
        page.get_by_role("button", name="Predict").click()
        expect(page.get_by_test_id("try-error")).to_contain_text("INVALID_ARGUMENT")

        # The live split, from the inference service's figures.
        row = {"x": {"dtype": "float32", "shape": [1, 8, 8, 1], "data": [0.0] * 64}}
        for _ in range(40):
            api(stack, "/api/v1/models/digits/predict", {"inputs": row}, method="POST")
        page.goto(base + "#/serving/digits")
        versions = page.get_by_test_id("serving-versions").locator("tbody tr")
        expect(versions).to_have_count(2)
        served = [int(versions.nth(i).locator("td").nth(3).inner_text()) for i in range(2)]
        assert served[0] > 0 and served[1] > 0 and sum(served) >= 42, served
        expect(versions.first.locator("td").nth(6)).to_contain_text("ms")
        page.screenshot(path=shots / "05-serving.png", full_page=True)

        # Roll back: the canary goes, in the audit log by the console.
        page.get_by_role("button", name="Roll back canary").click()
        expect(page.get_by_test_id("action-done")).to_contain_text("canary rolled back")
        expect(page.get_by_test_id("recent-changes")).to_contain_text(
            "rolled back from the console"
        )
        aliases = api(stack, "/api/v1/models/digits/aliases")[1]["aliases"]
        assert [a["name"] for a in aliases] == ["production"]
        assert any("Roll back" in text for text in dialogs)
        page.screenshot(path=shots / "07-rolled-back.png", full_page=True)

        # Two versions side by side.
        page.goto(base + "#/models/digits/compare/1/2")
        expect(page.get_by_test_id("compare-metrics")).to_contain_text("accuracy")
        expect(page.get_by_test_id("confusion-matrix")).to_have_count(2)
        page.screenshot(path=shots / "08-compare.png", full_page=True)

        # A narrow screen: no page wider than it (tables scroll inside their own box).
        page.set_viewport_size({"width": 390, "height": 844})
        for where, shown in (
            ("#/datasets", "datasets"),
            ("#/jobs", "jobs"),
            ("#/serving/digits", "serving-versions"),
            ("#/models/digits/compare/1/2", "compare-metrics"),
            ("#/models/digits", "versions"),
        ):
            page.goto(base + where)
            expect(page.get_by_test_id(shown)).to_be_visible()
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{where} is {overflow}px wider than the screen"
        page.screenshot(path=shots / "09-narrow.png", full_page=True)
        browser.close()
