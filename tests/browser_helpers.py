"""A real headless browser for page tests: Debian's chromium driven by selenium + chromedriver.

``scripts/test.sh`` installs both (``apt-get install chromium chromium-driver``) when absent;
nothing is downloaded at test time (the driver path is given, so selenium's manager never runs).
:func:`inspect_page` loads a page, collects the console's errors, counts each chart's rendered
marks (elements with a non-empty box) and saves a full-page screenshot under ``test-artifacts/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("PERSONA_MW_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PERSONA_MW_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

_MARKS_JS = """
return Array.from(document.querySelectorAll('figure.chart')).map(f => ({
  id: f.id,
  title: f.querySelector('figcaption').textContent,
  marks: Array.from(f.querySelectorAll('.mark')).filter(m => {
    const r = m.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  }).length,
}));
"""


@dataclass(frozen=True)
class PageReport:
    title: str
    console_errors: list[str]
    charts: dict[str, int]  # chart id -> rendered marks
    screenshot: Path
    text: str


def require_browser() -> None:
    """Fail in CI, skip elsewhere, when the browser is not installed (scripts/test.sh does it)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        message = f"{missing} not found: run `apt-get install -y chromium chromium-driver`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def chromium(headers: dict[str, str] | None = None) -> Iterator[Any]:
    """A headless chromium session; ``headers`` go with every request it makes."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        if headers:
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})
        yield driver
    finally:
        driver.quit()


def inspect_page(driver: Any, url: str, name: str) -> PageReport:
    """Load ``url``; its console errors, marks per chart, and a screenshot ``<name>.png``."""
    driver.get(url)
    charts = {c["id"]: c["marks"] for c in driver.execute_script(_MARKS_JS)}
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, max(int(height) + 100, 600))
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(shot))
    return PageReport(
        title=driver.title,
        console_errors=errors,
        charts=charts,
        screenshot=shot,
        text=driver.find_element("tag name", "body").text,
    )
