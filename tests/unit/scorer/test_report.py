"""The HTML quality report opened in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium) from file://, for a fleet of 50 and of 500 devices with known labels: every image loads, the browser
logs no error, the per-device navigation reaches a device's plot, and the confusion counts on the page are
streamtrain.quality's for the same scores."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from streamtrain.quality import Evaluation, evaluate, training_ranges
from streamtrain.scorer import report_plots
from streamtrain.scorer.report import tradeoff_counts, write_report
from tests.unit.scorer import fleet

DEADLINE_S = 60


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("chromium and chromedriver are missing: .ci/install installs Debian's chromium, chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager (which downloads drivers) never runs.
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield chrome
    finally:
        chrome.quit()


def _report(tmp_path: Path, devices: int) -> tuple[Path, Evaluation, list[dict]]:
    scores, models = fleet.scores(devices), fleet.manifests()
    ev = evaluate(scores, training=training_ranges(models))
    started = time.monotonic()
    path = write_report(tmp_path / "report", scores, ev, models, f"fleet of {devices}")
    print(
        f"report of {devices} devices ({len(scores)} scores): {time.monotonic() - started:.1f} s, "
        f"{path.stat().st_size / 1e6:.2f} MB"
    )
    return path, ev, scores


def _rows(browser, selector: str, key: str) -> list[dict[str, str]]:
    """Each row's ``key`` attribute and the text of its classed cells, read in one round trip."""
    return browser.execute_script(
        """var attribute = arguments[1];
           return Array.from(document.querySelectorAll(arguments[0])).map(function (r) {
             var out = {key: r.getAttribute(attribute)};
             r.querySelectorAll("td[class]").forEach(function (c) { out[c.className] = c.textContent; });
             return out; });""",
        selector,
        key,
    )


def _confusion(row: dict[str, str]) -> dict[str, int]:
    return {n: int(row[n]) for n in ("tp", "fp", "tn", "fn")}


@pytest.mark.parametrize("devices", [50, 500])
def test_report_in_a_real_browser(browser, tmp_path, devices):
    path, ev, _ = _report(tmp_path, devices)
    browser.get(path.as_uri())
    WebDriverWait(browser, DEADLINE_S).until(
        lambda b: b.execute_script(
            "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"
        )
    )
    widths = browser.execute_script("return Array.from(document.images).map(i => i.naturalWidth)")
    # One plot per device, the worst ones again as small multiples, the trade-off, the spread and the loss.
    assert len(widths) == devices + 9 + 3
    assert all(w > 0 for w in widths), widths
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []

    body = browser.find_element(By.TAG_NAME, "body").text
    assert "None" not in body and "{'" not in body  # formatted values, never Python reprs

    confusion = ("tp", "fp", "tn", "fn")
    shown = {r["key"]: _confusion(r) for r in _rows(browser, "#confusion tr[data-version]", "data-version")}
    expected = {str(v): q for v, q in ev.by_version.items()} | {"all": ev.overall}
    assert shown == {k: {n: getattr(q, n) for n in confusion} for k, q in expected.items()}
    assert sum(sum(c.values()) for k, c in shown.items() if k != "all") == ev.overall.records

    table = _rows(browser, "#devices-table tbody tr", "data-device")
    assert len(table) == devices
    # A device whose every reading a version trained on has nothing counted: a dash, sorted last.
    judged = [r for r in table if r["tp"] != "—"]
    assert {r["key"]: _confusion(r) for r in judged} == {
        d: {n: getattr(q, n) for n in confusion} for d, q in ev.by_device.items()
    }
    assert table[: len(judged)] == judged
    f1 = [float(r["f1"]) for r in judged]
    assert f1[:10] == sorted(f1[:10])  # worst first

    # The selector (worst first) reaches the best device's plot, at the far end of the page.
    select = Select(browser.find_element(By.ID, "device-select"))
    target = select.options[-1]
    anchor, name = target.get_attribute("value"), target.text
    select.select_by_value(anchor)
    WebDriverWait(browser, DEADLINE_S).until(lambda b: b.execute_script("return location.hash") == f"#{anchor}")
    section = browser.find_element(By.ID, anchor)
    assert section.find_element(By.TAG_NAME, "h4").text == name
    top, width = browser.execute_script(
        "const img = arguments[0].querySelector('img'); return [img.getBoundingClientRect().top, img.naturalWidth]",
        section,
    )
    assert 0 <= top < browser.execute_script("return window.innerHeight") and width > 0

    # A name in the devices table links to that device's plot too.
    link = browser.find_elements(By.CSS_SELECTOR, "#devices-table tbody tr a")[3]
    browser.execute_script("arguments[0].click()", link)
    linked = link.get_attribute("href").split("#", 1)[1]
    WebDriverWait(browser, DEADLINE_S).until(lambda b: b.execute_script("return location.hash") == f"#{linked}")
    assert browser.find_element(By.ID, linked).find_element(By.TAG_NAME, "h4").text == link.text

    # Sorting by a column in the page itself: numbers ascending, the dashes last.
    header = browser.find_element(By.XPATH, "//table[@id='devices-table']//th[text()='false_alarm_rate']")
    browser.execute_script("arguments[0].click()", header)
    column = [r["false_alarm_rate"] for r in _rows(browser, "#devices-table tbody tr", "data-device")]
    assert column == sorted((r["false_alarm_rate"] for r in judged), key=float) + ["—"] * (devices - len(judged))
    assert severe == [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_tradeoff_at_the_applied_threshold_is_what_evaluate_counts():
    """At factor 1 the curve's counts are evaluate's (the fleet alarms at score > threshold, no smoothing):
    same held-out readings, same versions."""
    scores, models = fleet.scores(60), fleet.manifests()
    ev = evaluate(scores, training=training_ranges(models))
    assert sum(ev.trained_on.values()) > 0 and ev.duplicates > 0 and ev.unlabelled > 0
    (one,) = np.flatnonzero(np.isclose(report_plots.THRESHOLD_FACTORS, 1.0))
    counts = tradeoff_counts(scores, training_ranges(models))
    assert set(counts) == set(ev.by_version)
    for v, q in ev.by_version.items():
        assert {k: int(c[one]) for k, c in counts[v].items()} == {"tp": q.tp, "fp": q.fp, "tn": q.tn, "fn": q.fn}
        # Raising the threshold never adds alarms.
        assert list(counts[v]["tp"] + counts[v]["fp"]) == sorted(counts[v]["tp"] + counts[v]["fp"], reverse=True)


def test_readings_without_an_event_time_are_counted_and_said(tmp_path):
    """A score with no ts cannot be drawn: it stays in the counts (evaluate's) and the page says how many."""
    scores, models = fleet.scores(5, readings=30), fleet.manifests()
    for s in scores[:3]:
        s["ts"] = None
    ev = evaluate(scores, training=training_ranges(models))
    html = write_report(tmp_path / "report", scores, ev, models, "no time").read_text()
    assert "(in the counts, in no plot)</th><td>3</td>" in html
    assert f'<tr data-version="all"><td class="name">all</td>\n<td class="records">{ev.overall.records}</td>' in html
    assert "None" not in re.sub(r"base64,[A-Za-z0-9+/=]+", "", html)  # no Python repr outside the images
