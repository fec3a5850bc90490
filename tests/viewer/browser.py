"""Headless Chromium from Debian's packages, driven by Selenium through Debian's chromedriver.

No browser or driver is ever downloaded: both paths are given, so Selenium's driver manager
is not consulted. The flags keep Chromium off the network (this machine's network is closed
and every background connection would be refused) and give it a new, empty profile.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path(os.environ.get("ISE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("ISE_CHROMEDRIVER", "/usr/bin/chromedriver"))
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # root in CI; the page is our own app on 127.0.0.1
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)
# Screenshots of every page the tests open, for a person to look at (git-ignored).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "viewer"


def missing() -> str:
    """Why the browser cannot start here, or '' when it can."""
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if absent:
        return f"not installed: {', '.join(absent)} (apt-get install chromium chromium-driver)"
    return ""


@contextmanager
def chromium() -> Iterator[object]:
    """A Selenium ``webdriver.Chrome`` on headless Debian Chromium; quit on exit."""
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium's manager fetch anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ise-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: object, name: str, *, full: bool = True) -> Path:
    """Save the page as ``test-artifacts/viewer/<name>.png``: the whole page (up to 8000
    pixels high, through the DevTools protocol), or with ``full=False`` what the 1400x1000
    window shows now."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if not full:
        driver.save_screenshot(str(path))  # type: ignore[attr-defined]
        return path
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]  # type: ignore[attr-defined]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
    shot = driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
