"""Read an ``opensdi_report.html`` the way a person sees it: in Debian's Chromium through playwright."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

READ_PAGE = """() => {
  const table = (id) => {
    const t = document.getElementById(id);
    if (!t) return null;
    return Array.from(t.querySelectorAll('tbody tr')).map(r => Array.from(r.cells).map(
      c => c.dataset.value !== undefined ? Number(c.dataset.value) : c.textContent));
  };
  const bounds = (id) => Array.from(document.getElementById(id).querySelectorAll('tbody tr')).map(r =>
    Array.from(r.cells).map(c => c.dataset.low !== undefined ? [Number(c.dataset.low), Number(c.dataset.high)] : null));
  const facts = {};
  document.querySelectorAll('#facts tr').forEach(r => { facts[r.cells[0].textContent] = r.cells[1].textContent; });
  return {
    images: Array.from(document.images).map(i => ({alt: i.alt, width: i.naturalWidth, src: i.src.slice(0, 22)})),
    figures: Array.from(document.querySelectorAll('figure')).map(f => f.id),
    facts: facts,
    tables: Object.fromEntries(Array.from(document.querySelectorAll('table[id]')).map(t => [t.id, table(t.id)])),
    intervals: Object.fromEntries(Array.from(document.querySelectorAll('table[id]')).map(t => [t.id, bounds(t.id)])),
    examples: Object.fromEntries(Array.from(document.querySelectorAll('.examples')).map(e => [e.id,
      Array.from(e.querySelectorAll('.example')).map(x => Number(x.querySelector('[data-value]').dataset.value))])),
    text: document.body.innerText,
  };
}"""


def read_report(path: Path) -> dict[str, Any]:
    """What the page shows once loaded from disk: every picture (decoded size), figure ids, the
    run's facts, each table's rows (exact numbers from ``data-value``) and intervals (``data-low``
    and ``data-high``, null where a cell has none), example F1s, and the requests it made (only
    ``file:`` and ``data:`` ones are allowed: the page is self-contained)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    requests: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1450, "height": 1000})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(path.resolve().as_uri(), wait_until="load")
            shown = page.evaluate(READ_PAGE)
        finally:
            browser.close()
    shown["requests"] = requests
    return shown
