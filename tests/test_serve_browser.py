"""The page of `musicembed serve` in a real headless browser: Debian's chromium driven by
its chromedriver through selenium (nothing is downloaded at test time).

Load the page, search by id, search by an uploaded file (the file input), click "More
like this" and see the results change, check that a result's <audio> element gets a
playable source (its URL answers a range request with 206, and the browser loads the
track's metadata through it), and that an error is shown on the page."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("musicembed_faiss", reason="the musicembed-faiss plugin is not installed")
httpx = pytest.importorskip("httpx", reason="install the test extra: pip install 'musicembed[test]'")
pytest.importorskip("fastapi", reason="install the serve extra: pip install 'musicembed[serve]'")

sys.path.insert(0, str(Path(__file__).parent))
import serve_support as ss  # noqa: E402

INSTALL = ("install Debian's chromium and its driver: `apt-get install chromium chromium-driver` "
           "(`make test` does it when run as root), and the test extra for selenium: "
           "pip install 'musicembed[test]'")


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        missing = [n for n, p in (("chromium", chromium), ("chromedriver", driver)) if not p]
        pytest.fail(f"the browser test needs {' and '.join(missing)}, not found on PATH: {INSTALL}")
    return chromium, driver


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-browser")
    src = ss.make_library(root / "lib")
    cfg = ss.run_config(ss.FAISS_GIN, src, root / "out")
    ss.index(cfg)
    with ss.serving(cfg) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.fail(f"selenium is missing ({exc}): {INSTALL}")
    chromium, driver = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1600", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    os.environ.setdefault("SE_AVOID_STATS", "true")
    web = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    web.set_page_load_timeout(60)
    yield web
    web.quit()


def _wait(browser, condition, what, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(
        lambda b: condition(b), message=f"timed out waiting for {what}")


def _result_ids(browser):
    from selenium.webdriver.common.by import By

    return [li.get_attribute("data-id") for li in browser.find_elements(By.CSS_SELECTOR, "#results li.hit")]


def _title(browser):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, "results-title").text


def test_page_search_upload_more_like_this_and_audio(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    _wait(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1",
          "the page to read /embeddings")
    assert "7 tracks" in browser.find_element(By.ID, "library-info").text
    assert not browser.find_element(By.ID, "text-query").is_enabled()  # logmel: no projector
    assert "no text projector" in browser.find_element(By.ID, "text-hint").text
    assert not browser.find_element(By.ID, "embedding-row").is_displayed()  # one embedding only

    # search by id
    box = browser.find_element(By.ID, "track-id")
    box.send_keys("jazz/b.flac")
    browser.find_element(By.ID, "id-search").click()
    _wait(browser, lambda b: "jazz/b.flac" in _title(b) and len(_result_ids(b)) == 6, "id results")
    by_id = _result_ids(browser)
    assert "jazz/b.flac" not in by_id and len(set(by_id)) == 6

    # search by an uploaded file, through the file input
    upload = tmp_path / "my clip.mp3"
    shutil.copy(Path(server.library.cfg.source) / "d.mp3", upload)
    browser.find_element(By.ID, "file-input").send_keys(str(upload))
    _wait(browser, lambda b: "my clip.mp3" in _title(b) and _result_ids(b)[:1] == ["d.mp3"],
          "upload results")
    by_file = _result_ids(browser)
    assert by_file[0] == "d.mp3" and len(by_file) == 7

    # "More like this" on the second result: the list changes to that track's neighbours
    second = browser.find_elements(By.CSS_SELECTOR, "#results li.hit")[1]
    target = second.get_attribute("data-id")
    second.find_element(By.CSS_SELECTOR, "button.more-like-this").click()
    _wait(browser, lambda b: target in _title(b) and target not in _result_ids(b), "more like this")
    more = _result_ids(browser)
    assert more != by_file and len(more) == 6
    assert browser.find_element(By.ID, "track-id").get_attribute("value") == target
    want = httpx.get(server.url + "/search", params={"id": target, "k": 10}).json()
    assert more == [h["id"] for h in want["hits"]]

    # the audio element has a playable source: a range request answers 206, and the
    # browser loads the track's metadata through it
    audio = browser.find_elements(By.CSS_SELECTOR, "#results li.hit audio")[0]
    assert audio.get_attribute("preload") == "none"
    src = audio.get_attribute("src")
    first = more[0]
    assert src.endswith("/tracks/" + "/".join(httpx.URL(src).path.split("/")[2:-1]) + "/audio")
    resp = httpx.get(src, headers={"Range": "bytes=0-99"})
    assert resp.status_code == 206 and len(resp.content) == 100
    assert resp.headers["content-range"].startswith("bytes 0-99/")
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {headers: {Range: 'bytes=0-99'}}).then(r => done(r.status));", src)
    assert status == 206
    state = browser.execute_async_script(
        "const a = arguments[0], done = arguments[arguments.length - 1];"
        "a.addEventListener('loadedmetadata', () => done({ok: true, duration: a.duration}));"
        "a.addEventListener('error', () => done({ok: false, code: a.error && a.error.code}));"
        "a.preload = 'metadata'; a.load();", audio)
    assert state["ok"], state
    assert state["duration"] == pytest.approx(ss.SECONDS, abs=0.2), (first, state)

    # errors are shown on the page
    box = browser.find_element(By.ID, "track-id")
    box.clear()
    box.send_keys("nope.wav")
    browser.find_element(By.ID, "id-search").click()
    _wait(browser, lambda b: b.find_element(By.ID, "error").is_displayed(), "the error message")
    assert "no such track" in browser.find_element(By.ID, "error").text
    browser.save_screenshot(os.environ.get("MUSICEMBED_SCREENSHOT") or str(tmp_path / "page.png"))


def test_filter_field_applies_to_searches(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server.url + "/")
    _wait(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1",
          "the page")
    browser.find_element(By.ID, "filter").send_keys('path like "%rock%"')
    box = browser.find_element(By.ID, "track-id")
    box.send_keys("c.ogg", Keys.ENTER)
    _wait(browser, lambda b: "c.ogg" in _title(b), "filtered results")
    assert _result_ids(browser) == ["rock/a.wav"]
