"""End to end: the report of every kind of run, opened in headless Chromium.

Checks what a reader would notice: every figure renders with a non-zero size, the browser console
shows no errors, and at phone width (390 px) the page does not scroll sideways. Screenshots of the
whole page at desktop and phone width, and the report itself, are saved as test artifacts in
``$IQALENS_TEST_ARTIFACTS`` (default: ``test-artifacts/report`` in the repository).

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs them) and the
``selenium`` dev dependency; skipped without them. Selenium is pointed at the installed binaries, so
Selenium Manager never tries to download a browser. Run it alone with
``.venv/bin/pytest tests/test_report_browser.py``.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iqalens.report import write_report
from report_fixtures import shared_runs

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PHONE_WIDTH = 390
DESKTOP = (1280, 900)

pytestmark = pytest.mark.slow


def artifact_dir() -> Path:
    """Where screenshots go: ``$IQALENS_TEST_ARTIFACTS/report`` or ``test-artifacts/report``."""
    base = os.environ.get("IQALENS_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "test-artifacts"
    folder = Path(base) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium (a dev dependency) is not installed"
    )
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except WebDriverException as exc:  # e.g. a driver that does not match the browser
        pytest.skip(f"chromium could not be started: {exc.msg}")
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = shared_runs(tmp_path_factory.getbasetemp())
    out = write_report(
        [runs], artifact_dir() / "report.html", title="iqalens report (test fixtures)", overwrite=True
    )
    return out


def full_page_screenshot(browser: Any, width: int, path: Path) -> None:
    """The whole page at ``width`` CSS pixels, however long it is (DevTools protocol screenshot)."""
    browser.set_window_size(width, 900)
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600},
    )
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.write_bytes(base64.b64decode(shot["data"]))


def test_report_renders_in_chromium(driver: Any, report: Path) -> None:
    driver.set_window_size(*DESKTOP)
    driver.get(report.as_uri())
    driver.get_log("browser")  # nothing before the page load counts
    driver.refresh()
    sizes = driver.execute_script(
        """
        return Array.from(document.querySelectorAll('figure img, svg')).map(function (el) {
          var box = el.getBoundingClientRect();
          return {tag: el.tagName, complete: el.complete === undefined ? true : el.complete,
                  naturalWidth: el.naturalWidth === undefined ? box.width : el.naturalWidth,
                  naturalHeight: el.naturalHeight === undefined ? box.height : el.naturalHeight,
                  width: box.width, height: box.height, alt: el.getAttribute('alt')};
        });
        """
    )
    assert len(sizes) >= 20
    broken = [s for s in sizes if not (s["complete"] and s["naturalWidth"] > 0 and s["naturalHeight"] > 0)]
    assert not broken, f"figures that did not load: {broken}"
    empty = [s for s in sizes if not (s["width"] > 0 and s["height"] > 0)]
    assert not empty, f"figures drawn with no size: {empty}"
    errors = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    assert not errors, f"browser console errors: {errors}"
    full_page_screenshot(driver, DESKTOP[0], artifact_dir() / "report-desktop.png")


def test_report_fits_a_phone_screen(driver: Any, report: Path) -> None:
    driver.get(report.as_uri())
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE_WIDTH, "height": 844, "deviceScaleFactor": 1, "mobile": True},
    )
    try:
        driver.refresh()
        width, inner = driver.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        wide = driver.execute_script(
            """
            return Array.from(document.querySelectorAll('body *')).filter(function (el) {
              if (el.closest('.table-wrap')) { return false; }  // tables scroll inside their own box
              return el.getBoundingClientRect().right > window.innerWidth + 1;
            }).slice(0, 5).map(function (el) { return el.tagName + '.' + el.className; });
            """
        )
        figure_widths = driver.execute_script(
            "return Array.from(document.querySelectorAll('figure img'))"
            ".map(function (e) { return e.getBoundingClientRect().width; })"
        )
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert inner == PHONE_WIDTH
    assert width <= inner, f"the page scrolls sideways at {PHONE_WIDTH}px: {wide}"
    assert not wide
    assert figure_widths and all(0 < w <= PHONE_WIDTH for w in figure_widths)
    full_page_screenshot(driver, PHONE_WIDTH, artifact_dir() / "report-phone.png")
