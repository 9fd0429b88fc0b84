"""Headless Chromium for tests that look at pages as a person would (Debian's chromium + chromium-driver).

`chromium_driver()` returns a Selenium driver, or the reason there is none: the
packages are installed with apt-get when missing and this runs as root, and a
test that needs the browser skips with that reason (under CI, where .ci/run
installs the packages, it fails instead: a skipped browser check there would
hide a broken install step).
"""

import shutil
import tempfile
from pathlib import Path

import debian_packages

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PACKAGES = ("chromium", "chromium-driver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
)


def _missing():
    return [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]


def chromium_driver():
    """(driver, None) or (None, reason). The caller quits the driver; its profile folder is removed then."""
    if _missing():
        problem = debian_packages.install(PACKAGES, _missing)
        if problem:
            return (
                None,
                f"headless Chromium unavailable ({problem}); install the Debian packages {' and '.join(PACKAGES)}",
            )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        return None, f"selenium is not installed ({exc}); it is pinned in requirements.txt"
    profile = tempfile.mkdtemp(prefix="cifarbench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as exc:  # noqa: BLE001 - any start failure is a reason to report, with its message
        shutil.rmtree(profile, ignore_errors=True)
        return None, f"headless Chromium did not start: {str(exc).strip().splitlines()[0]}"
    original_quit = driver.quit

    def quit_and_clean():
        original_quit()
        shutil.rmtree(profile, ignore_errors=True)

    driver.quit = quit_and_clean
    return driver, None


DECODE_ALL_IMAGES = """
const done = arguments[arguments.length - 1];
Promise.all(Array.from(document.images).map(img => img.decode().then(
    () => ({alt: img.alt, ok: true, width: img.naturalWidth, height: img.naturalHeight,
            shown: img.getBoundingClientRect().width}),
    err => ({alt: img.alt, ok: false, error: String(err)})))).then(done);
"""


def decoded_images(driver, html_path):
    """Open a local HTML file and decode every <img>: [{alt, ok, width, height, shown}]."""
    driver.set_script_timeout(60)
    driver.get(Path(html_path).resolve().as_uri())
    return driver.execute_async_script(DECODE_ALL_IMAGES)


TABLE_FIT = """
const body = document.body.getBoundingClientRect();
const style = getComputedStyle(document.body);
const right = body.right - parseFloat(style.paddingRight);
return {page_overflow: document.documentElement.scrollWidth > window.innerWidth,
        tables: [...document.querySelectorAll('table')].map(t => ({
          overflow: t.scrollWidth - t.clientWidth, past_body: t.getBoundingClientRect().right - right}))};
"""


def table_fit(driver, html_path, width=1400):
    """Open a local HTML file at `width` px: whether the page scrolls sideways, and per table how many px
    its content needs beyond its box (`overflow`) and how far it reaches past the body (`past_body`)."""
    driver.set_window_size(width, 900)
    try:
        driver.get(Path(html_path).resolve().as_uri())
        return driver.execute_script(TABLE_FIT)
    finally:
        driver.set_window_size(1200, 900)  # the size FLAGS start with, for the tests that follow
