"""The built book in a real headless Chromium: every page loads its figures, links resolve, no cell errors,
its math is typeset by the MathJax served with the book (no raw TeX left, nothing fetched from another host),
and no code cell is wider than the column.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); without them the
test is skipped with the reason. The book is ``_build/html`` when that build is newer than every
source; otherwise it is built here from the committed notebook outputs (execution off), which
the nbval run of the same test command checks against a fresh execution.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
SHOTS = BUILD / "screenshots"
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PAGES = ["book/intro", *[f"notebooks/{c}" for c in CHAPTERS], "book/handout", "book/api", "book/references"]
STEP_VIEWS = ["notebooks/02_bpe", "notebooks/03_transformer"]


def _browser() -> tuple[str, str]:
    """Debian's chromium and chromedriver (or Chrome and its driver, as GitHub's runners have them)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_dir = os.environ.get("CHROMEWEBDRIVER")
    driver = shutil.which("chromedriver") or (shutil.which("chromedriver", path=driver_dir) if driver_dir else None)
    if not (browser and driver):
        pytest.skip("browser test skipped: no Chromium found (install Debian's chromium and chromium-driver; .ci/run does)")
    pytest.importorskip("selenium", reason="browser test skipped: selenium is not installed")
    return browser, driver


def _sources_mtime() -> float:
    files = [ROOT / "_config.yml", ROOT / "_toc.yml", *ROOT.glob("book/*"), *ROOT.glob("notebooks/*.ipynb"),
             *ROOT.glob("lmcore/**/*.py")]
    return max(f.stat().st_mtime for f in files)


@pytest.fixture(scope="module")
def book() -> Path:
    _browser()
    html = BUILD / "html"
    if (html / "index.html").exists() and (html / "index.html").stat().st_mtime > _sources_mtime():
        return html
    out = BUILD / "browser-book"
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    BUILD.mkdir(exist_ok=True)
    cfg = BUILD / "browser-book-config.yml"
    cfg.write_text(yaml.safe_dump(config))
    jb = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jb), "build", str(ROOT), "--config", str(cfg), "--path-output", str(out), "-W", "-n", "--keep-going"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out / "_build" / "html"


@pytest.fixture(scope="module")
def server(book):
    handler = functools.partial(_QuietHandler, directory=str(book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    browser, chromedriver = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,2000",
                 # Offline, as a reader without a network: no host name resolves except the loopback server's.
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    d = webdriver.Chrome(options=options, service=Service(chromedriver))
    d.set_page_load_timeout(60)
    d.set_script_timeout(60)
    yield d
    d.quit()


_FIGURES_JS = """
const imgs = Array.from(document.querySelectorAll('main img, article img, .bd-article img'));
return imgs.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, !!i.closest('.cell_output, .output')]);
"""


#: Resolves once MathJax has typeset the page (false when MathJax never started within 15 s).
_MATHJAX_DONE_JS = """
const done = arguments[arguments.length - 1], start = Date.now();
(function wait() {
  const ready = window.MathJax && MathJax.startup && MathJax.startup.promise;
  if (ready) ready.then(() => done(true), () => done(false));
  else if (Date.now() - start > 15000) done(false);
  else setTimeout(wait, 100);
})();
"""

#: Sphinx's math spans/divs, how many hold typeset math, and MathJax's error boxes (an unknown macro).
_MATH_JS = """
const math = Array.from(document.querySelectorAll('span.math, div.math'));
return [math.length, math.filter(m => m.querySelector('mjx-container, .katex')).length,
        document.querySelectorAll('mjx-container').length, document.querySelectorAll('mjx-merror').length];
"""

#: Everything the page loaded or asked for: scripts, style sheets, fonts, images.
_RESOURCES_JS = """
return [...performance.getEntriesByType('resource').map(e => e.name),
        ...Array.from(document.querySelectorAll('script[src], link[rel~=stylesheet][href], img[src], iframe[src]'))
             .map(e => e.src || e.href)];
"""

#: Code cells (input and printed output) whose text is wider than the column, so it sits behind a scroll bar.
_WIDE_CELLS_JS = """
return Array.from(document.querySelectorAll('div.cell_input pre, div.cell_output pre'))
  .filter(e => e.scrollWidth > e.clientWidth + 1)
  .map(e => e.textContent.split('\\n').reduce((a, b) => (b.length > a.length ? b : a), '').slice(0, 80));
"""

RAW_TEX = ["\\(", "\\)", "\\[", "\\]", "$$"]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _math_in_source(book: Path, page: str) -> int:
    """How many formulas the built page holds, as Sphinx wrote them (before any script typesets them)."""
    return (book / f"{page}.html").read_text(encoding="utf-8").count('class="math notranslate nohighlight"')


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("page", PAGES)
def test_page_in_chromium(page, book, server, driver):
    url = urllib.parse.urljoin(server, page + ".html")
    assert _status(url) == 200, f"{page}.html is not in the built book"
    driver.get(url)
    driver.execute_script("return document.readyState")
    formulas = _math_in_source(book, page)
    typeset = driver.execute_async_script(_MATHJAX_DONE_JS) if formulas else None

    visible = driver.execute_script("return document.body.innerText")
    raw = {d: visible[max(0, i - 30):i + 30] for d in RAW_TEX if (i := visible.find(d)) >= 0}
    assert not raw, f"{page}: raw TeX shows in the page (math not typeset): {raw}"
    outside = sorted({u for u in driver.execute_script(_RESOURCES_JS)
                      if urllib.parse.urlsplit(u).scheme in ("http", "https")
                      and urllib.parse.urlsplit(u).hostname not in LOOPBACK})
    assert not outside, f"{page}: loads resources from another host, which an offline reader lacks: {outside}"
    spans, rendered, containers, merrors = driver.execute_script(_MATH_JS)
    assert spans == formulas, f"{page}: {formulas} formulas in the HTML, {spans} math elements in the page"
    if formulas:
        assert typeset and rendered == formulas, f"{page}: {rendered} of {formulas} formulas typeset by MathJax"
        assert merrors == 0, f"{page}: {merrors} formulas MathJax could not parse (mjx-merror)"
    wide = driver.execute_script(_WIDE_CELLS_JS)
    assert not wide, f"{page}: code cells wider than the column (a horizontal scroll bar): {wide}"
    images = driver.execute_script(_FIGURES_JS)
    broken = [src for src, complete, width, _ in images if not (complete and width > 0)]
    assert not broken, f"{page}: images that did not load: {broken}"
    figures = sum(1 for *_, in_output in images if in_output)
    if page.startswith("notebooks/"):
        assert figures >= 1, f"{page}: a chapter without a single figure"

    links = driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    internal = {urllib.parse.urldefrag(h)[0] for h in links if h.startswith(server)}
    bad = sorted(h for h in internal if _status(h) != 200)
    assert not bad, f"{page}: broken internal links: {bad}"

    errors = driver.execute_script(
        "return document.querySelectorAll('.output.error, .output.traceback, div.traceback, .cell_output .stderr').length")
    text = driver.find_element("tag name", "body").text
    assert errors == 0 and "Traceback (most recent call last)" not in text, f"{page}: a cell shows an error"

    SHOTS.mkdir(parents=True, exist_ok=True)
    name = page.replace("/", "_")
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    if formulas:  # the first display formula (else the first inline one), typeset, with the text around it
        first = driver.execute_script("const m = document.querySelector('div.math') || document.querySelector('span.math');"
                                      "m.scrollIntoView({block: 'center'}); return m;")
        driver.save_screenshot(str(SHOTS / f"{name}-math.png"))
        assert first.find_elements("css selector", "mjx-container")
    cells = driver.execute_script("return document.querySelectorAll('div.cell_input').length")
    if cells:  # the code cell with the longest source line: it must wrap inside the column
        cell = driver.execute_script(
            "const cells = Array.from(document.querySelectorAll('div.cell_input'));"
            "const longest = c => Math.max(...c.textContent.split('\\n').map(l => l.length));"
            "const c = cells.reduce((a, b) => (longest(b) > longest(a) ? b : a));"
            "c.scrollIntoView({block: 'center'}); return c;")
        cell.screenshot(str(SHOTS / f"{name}-widest-cell.png"))
    with open(SHOTS / "figures.txt", "a") as f:
        f.write(f"{page}\t{figures} figures\t{len(internal)} internal links\t{formulas} formulas, "
                f"{containers} typeset (mjx-container)\n")


_GLUE_FAILED_JS = "return Array.from(document.querySelectorAll('.pasted-text, .pasted-inline')).map(e => e.textContent)"


def test_handout_page_shows_glued_answers(server, driver):
    """The handout map pastes numbers from the chapters: every paste must have rendered."""
    driver.get(urllib.parse.urljoin(server, "book/handout.html"))
    pasted = driver.execute_script(_GLUE_FAILED_JS)
    assert len(pasted) >= 30 and all(p.strip() for p in pasted), pasted
    text = driver.find_element("tag name", "body").text
    for problem in ["unicode1", "train_bpe_tinystories", "transformer_accounting", "adamwAccounting", "leaderboard"]:
        assert problem in text


@pytest.mark.parametrize("page", STEP_VIEWS)
def test_step_view_moves_in_the_page_without_a_kernel(page, server, driver):
    """The precomputed steps are all in the page; the buttons and the slider show one at a time."""
    from selenium.webdriver.common.by import By

    driver.get(urllib.parse.urljoin(server, page + ".html"))
    view = driver.find_element(By.CSS_SELECTOR, ".lmcore-stepview")
    driver.execute_script("arguments[0].scrollIntoView()", view)
    steps = view.find_elements(By.CSS_SELECTOR, ".lmcore-step")
    label = view.find_element(By.CSS_SELECTOR, ".lmcore-step-label")

    def shown() -> list[int]:
        return [i for i, s in enumerate(steps) if s.is_displayed()]

    assert len(steps) >= 5 and shown() == [0] and label.text == f"step 1 of {len(steps)}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    name = page.replace("/", "_")
    view.screenshot(str(SHOTS / f"{name}-stepview-1.png"))
    first_text = steps[0].text
    view.find_element(By.CSS_SELECTOR, ".lmcore-next").click()
    view.find_element(By.CSS_SELECTOR, ".lmcore-next").click()
    assert shown() == [2] and label.text == f"step 3 of {len(steps)}" and steps[2].text != first_text
    view.screenshot(str(SHOTS / f"{name}-stepview-3.png"))
    view.find_element(By.CSS_SELECTOR, ".lmcore-prev").click()
    assert shown() == [1]
    slider = view.find_element(By.CSS_SELECTOR, "input[type=range]")
    driver.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))",
                          slider, len(steps) - 1)
    assert shown() == [len(steps) - 1]
