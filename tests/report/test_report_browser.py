"""The HTML report in headless Chromium (Debian's chromium through playwright): the headline and the
plots render (checked on screenshots), and hostile model output is shown as text, never executed.
"""

from __future__ import annotations

import os
import struct
import zlib

import pytest

from evalkit import gates as G
from evalkit.report import write_reports
from evalkit.store import Store
from tests.report.crafted import MODELS, config_with, item, ok, summary_for

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("EVALKIT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

HOSTILE = (
    "<script>window.__pwned=1;document.title='pwned'</script>"
    "<img src=x onerror=\"window.__pwned=2\">"
    "</textarea></pre><b id=injected>bold</b>"
)


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Decode an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes) without Pillow."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = ctype = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = 4 if ctype == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    i = 0
    for _ in range(height):
        f = raw[i]
        line = bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels.extend((line[x], line[x + 1], line[x + 2]) for x in range(0, stride, bpp))
        prev = line
    return width, height, pixels


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser_report")
    cfg = config_with([
        {"name": "fmt", "metric": "pass_rate", "scorer": "fmt", "min": 0.9},
        {"name": "beats-base", "metric": "win_rate", "judge": "pairwise", "min": 0.5},
        {"name": "noreg", "metric": "regressions", "scorer": "fmt", "vs": "last_accepted"},
    ])
    with Store(root / "store.db") as st:
        for rate in (0.7, 0.8):  # two accepted runs for the trend
            rid = st.begin_run(name="crafted", config_path=None, config={}, out_dir=None)
            old = [item("cand", f"x{i}", {"fmt": ok(i < rate * 10)}, run_id=rid) for i in range(10)]
            st.save_run_items(rid, old)
            st.finish_run(rid, summary_for(old, [], True, run_id=rid, metrics=[
                {"model": "cand", "suite": "s", "scorer": "fmt", "metric": "pass_rate", "value": rate, "n": 10, "errors": 0}]), "passed")
            st.set_accepted(rid)
        run_id = st.begin_run(name="crafted", config_path=None, config={}, out_dir=None)
        items = []
        for i in range(10):
            tags = ("easy",) if i < 5 else ("hard",)
            items.append(item("base", f"x{i}", {"fmt": ok(True), "judge.correctness": ok(None, value=3 + i % 2)}, output=f"base answer {i}", tags=tags, run_id=run_id))
            cand_out = HOSTILE if i == 3 else f"candidate answer {i}"
            items.append(item("cand", f"x{i}", {"fmt": ok(i not in (3, 7)), "judge.correctness": ok(None, value=2 + i % 4),
                                                "judge.pairwise": ok(None, value=[1, 1, 0.5, 0, 1, 1, 1, 0, 1, 1][i])},
                              output=cand_out, tags=tags, run_id=run_id, prompt=HOSTILE if i == 3 else f"question {i}"))
        results = G.evaluate_gates(cfg.gates, items=items, models=MODELS, baseline="base", candidates=["cand"], store=st, run_name="crafted", run_id=run_id)
        summary = summary_for(items, [r.as_dict() for r in results], G.all_passed(results), run_id=run_id,
                              metrics=[{"model": "cand", "suite": "s", "scorer": "fmt", "metric": "pass_rate", "value": 0.8, "n": 10, "errors": 0}],
                              judges={"pairwise": {"mode": "pairwise", "errors": 1, "position_bias_rate": 0.25, "length_bias": {"pairwise": {"spearman": 0.12, "p_value": 0.4, "n": 10}}, "cost": 0.42, "providers": {"x": {"requests": 3}}}})
        st.save_run_items(run_id, items)
        st.finish_run(run_id, summary, "failed")
        write_reports(root / "out", summary, items, store=st, step_summary=False)
    return root / "out" / "report.html"


@pytest.fixture(scope="module")
def page(report_file):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
        pg = ctx.new_page()
        pg.set_default_timeout(30_000)
        requests: list[str] = []
        dialogs: list[str] = []
        pg.on("request", lambda r: requests.append(r.url))
        pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        pg.goto(report_file.as_uri())
        pg.wait_for_load_state("load")
        pg.requests = requests
        pg.dialogs = dialogs
        yield pg
        browser.close()


def test_headline_and_gate_table(page):
    verdict = page.locator("#verdict")
    assert "Don't ship" in verdict.inner_text()
    assert "fmt (cand)" in verdict.inner_text()
    rows = page.locator("#gates ~ table").first.locator("tr")
    assert rows.count() == 4  # header + 3 gate results
    w, h, px = png_pixels(verdict.screenshot())
    # the "don't ship" banner is red-tinted (#fdecea background)
    reddish = sum(1 for r, g, b in px if r > 240 and 220 <= g <= 245 and 220 <= b <= 245 and r - g > 8)
    assert reddish > 0.5 * w * h, "verdict banner is not the red don't-ship banner"


def test_plots_render(page):
    kinds = page.eval_on_selector_all("svg.plot", "els => els.map(e => e.getAttribute('class'))")
    for k in ("plot-passrates", "plot-hist", "plot-winrates", "plot-deltas", "plot-trend"):
        assert any(k in c for c in kinds), (k, kinds)
    fig = page.locator("svg.plot-winrates")
    box = fig.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 40
    assert page.locator("svg.plot-winrates path.ci").count() >= 1  # CI bars
    w, h, px = png_pixels(fig.screenshot())
    colored = sum(1 for r, g, b in px if max(r, g, b) - min(r, g, b) > 60)
    assert colored > 0.03 * w * h, "the win-rate plot has no drawn bars"
    trend = page.locator("svg.plot-trend circle")
    assert trend.count() >= 3  # two accepted runs and this one


def test_hostile_output_is_text_not_code(page):
    assert page.evaluate("window.__pwned") is None
    assert page.title().startswith("evalkit report")
    assert page.locator("#injected").count() == 0
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 0
    shown = page.locator("pre.output").all_inner_texts()
    assert any("<script>window.__pwned=1" in t and "<img src=x onerror=" in t and "</textarea></pre>" in t for t in shown)
    assert page.dialogs == []
    # self-contained: the only request is the file itself
    assert all(u.startswith("file://") for u in page.requests), page.requests


def test_sections_present(page):
    text = page.locator("body").inner_text()
    for heading in ("Gates", "Plots", "Metrics per suite", "Metrics per tag", "Pairwise win rates", "Worst regressions", "Judge reliability", "Cost and calls"):
        assert heading in text, heading
    assert "pairwise.position_bias_rate" in text and "pairwise.length_bias.pairwise.spearman" in text and "pairwise.cost" in text and "providers" not in text
