"""A real headless Chromium for the web tests: Debian's /usr/bin/chromium driven by Playwright (no download).

``make data`` and ``.ci/run`` install the ``chromium`` package; without it these tests fail (they do not skip).
"""
from __future__ import annotations

import contextlib
import json
import os

CHROMIUM = os.environ.get("L335Q_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextlib.contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: `apt-get install chromium` (make data does it as root)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def watch_console(page) -> list[str]:
    """Collects the page's console errors and uncaught exceptions (the list fills as the page runs)."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"exception: {exc}"))
    return errors


def images_loaded(page) -> list[dict]:
    """Every <img> of the page with its natural width, after each has finished loading (or failing)."""
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=30_000)
    return page.evaluate("Array.from(document.images).map(i => ({src: i.src.slice(0, 60), w: i.naturalWidth}))")


def table_rows(page, selector: str) -> tuple[list[str], list[dict]]:
    """A rendered table's column names and rows, each cell's raw value read back from its data-value JSON."""
    columns = page.eval_on_selector_all(f"{selector} thead th", "ths => ths.map(th => th.dataset.column)")
    cells = page.eval_on_selector_all(f"{selector} tbody tr",
                                      "trs => trs.map(tr => Array.from(tr.cells).map(td => td.dataset.value))")
    return columns, [dict(zip(columns, (json.loads(v) for v in row))) for row in cells]


def same_rows(shown: list[dict], expected: list[dict]) -> bool:
    """The rows of a table are the JSON rows: the same values in the same order (columns the JSON row lacks are
    shown empty)."""
    return len(shown) == len(expected) and all(
        {k: v for k, v in s.items() if v is not None} == {k: v for k, v in e.items() if v is not None}
        for s, e in zip(shown, expected))
