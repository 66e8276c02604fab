"""A first-time user in a real browser (Debian's chromium driven by Playwright): type, compare, open a feature; train
and cancel; search the Hub."""

from __future__ import annotations

import re
import shutil
import time

import pytest

from .helpers import copy_crosscoder

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def page():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed (scripts/bootstrap.sh test installs it)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        yield context.new_page()
        browser.close()


def test_compare_then_open_a_feature_in_the_browser(page, served, artifacts, tiny_dfc, tmp_path):
    page.goto(served[0], wait_until="load")
    page.locator("#compare-btn").wait_for(timeout=60_000)
    page.get_by_label("Prompt").first.fill("The Tiananmen Square protests of 1989. 中国的历史很长。 def f(x): return x")
    page.locator("#compare-btn").click()
    page.wait_for_selector("#tokens-a .cd-tok", timeout=60_000)
    page.wait_for_selector("#tokens-b .cd-tok", timeout=60_000)
    assert page.locator("#tokens-a .cd-tok").count() > 10 and page.locator("#tokens-b .cd-tok").count() > 10
    lead = page.locator("#compare-summary p").first  # the lead in plain words comes first
    lead.wait_for(timeout=10_000)
    assert "reads something here that model" in lead.inner_text() and "Confidence" in lead.inner_text()
    shaded = page.locator("#tokens-a .cd-tok[style*='background']").count()
    assert shaded > 0, "some tokens of model A are shaded by exclusivity"
    first_row = page.locator("#table-a [data-testid=cell-0-0]")  # the table is virtualized: rows are divs
    first_row.wait_for(timeout=30_000)
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / "compare.png"), full_page=True)

    first_row.click()
    page.wait_for_selector("#feature-contexts .cd-context", timeout=30_000)
    assert page.get_by_role("tab", name="Feature").get_attribute("aria-selected") == "true"
    assert page.get_by_text("Where it fires most").is_visible()
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / "feature.png"), full_page=True)

    page.get_by_role("button", name="Verify by steering →").click()
    page.get_by_text("Ready to steer").wait_for(timeout=30_000)
    assert page.get_by_role("tab", name="Steer").get_attribute("aria-selected") == "true"
    assert page.get_by_label("Pick a readable strength for me").is_checked()
    page.get_by_role("button", name="Generate both").click()
    # the readable-strength pick writes five texts (unsteered and four strengths) of 24 tokens in one batch
    page.get_by_text("How strongly the feature fires on the prompt").wait_for(timeout=240_000)
    page.locator("#steer-trials").get_by_text("Strengths tried").wait_for(timeout=10_000)
    before = page.locator("#steer-before").inner_text().strip()
    after = page.locator("#steer-after").inner_text().strip()
    assert before and after
    marks = page.locator("#steer-diff ins, #steer-diff del").count()
    assert (marks > 0) == (before != after), "the words the steering changed are marked, and only those"
    page.screenshot(path=str(artifacts / "steer.png"), full_page=True)

    for tab in ("Models & crosscoder", "Train", "Report"):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(700)
        page.screenshot(path=str(artifacts / f"{tab.split()[0].lower()}.png"), full_page=True)

    # another crosscoder: the results on display were made by the old one, so they go
    other = copy_crosscoder(tiny_dfc, tmp_path / "another")
    page.get_by_role("tab", name="Models & crosscoder").click()
    page.get_by_label("Folder path").fill(str(other))
    page.get_by_role("button", name="Load", exact=True).click()
    page.get_by_text("another").first.wait_for(timeout=60_000)
    page.get_by_role("tab", name="Compare").click()
    page.get_by_text("Click Compare to see model A's tokens.").wait_for(timeout=10_000)
    assert (
        page.locator("#table-a [data-testid=cell-0-0]").count() == 0 and not page.locator("#compare-summary p").count()
    )
    page.get_by_role("tab", name="Steer").click()
    assert page.locator("#steer-after").count() == 0  # the steered texts went too


def test_harvest_shows_its_count_and_time_left_and_cancel_stops_it_within_5_s(
    page, served, sentences, tmp_path, artifacts
):
    """Issue 16: the Train status shows tokens read of the total and the time left while it harvests, and Cancel
    during the harvest stops the job within 5 s, keeping the text read so far."""
    from crossdiff_core.activations.store import read_meta

    folder = tmp_path / "browser-job"
    page.goto(served[0], wait_until="load")
    page.get_by_role("tab", name="Train").click()
    page.get_by_label("Text corpus").fill(sentences)  # short windows: the first batch, and the time left, come soon
    page.get_by_label("Token budget").fill("20000")  # far more than the test waits for: it stays in the harvest
    page.get_by_text("More settings").click()
    page.get_by_label("Job folder").fill(str(folder))
    page.get_by_role("button", name="Start training").click()
    status = page.locator("#train-status")
    status.get_by_text(re.compile(r"[\d,]+ / 20,000 paired tokens read · about \d+ (s|min) left")).wait_for(
        timeout=180_000
    )
    page.screenshot(path=str(artifacts / "train-harvest.png"), full_page=True)
    clicked = time.perf_counter()
    page.get_by_role("button", name="Cancel").click()
    status.get_by_text("Cancelled").wait_for(timeout=30_000)
    took = time.perf_counter() - clicked
    assert took < 5, f"the job stopped {took:.1f} s after Cancel"
    assert "while reading text with both models" in status.inner_text()
    meta = read_meta(folder / "store")
    assert not meta["complete"] and 0 < meta["counts"]["rows"] < 20_000, "the text read so far is kept"
    page.screenshot(path=str(artifacts / "train-cancelled.png"), full_page=True)


def test_hub_search_error_stays_visible(page, served):
    page.goto(served[0], wait_until="load")
    page.get_by_role("tab", name="Models & crosscoder").click()
    page.get_by_role("button", name="Find crosscoders for this pair on the Hub").click()
    results = page.locator("#hub-results")
    results.get_by_text("Could not search the Hub").wait_for(timeout=30_000)
    page.wait_for_timeout(6_000)  # longer than a message toast stays
    assert results.get_by_text("Could not search the Hub").is_visible()
