"""The real review page in headless Chromium (Debian's chromium through playwright)."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from evalkit.review import ReviewServer, create_session, reviewer_verdicts, unblind

from .conftest import BASE, BASE_ID, BASE_PATH, CAND, CAND_ID, CAND_PATH, make_run

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("EVALKIT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)  # 2 shared cores under a parallel test load: be patient, not flaky
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.errors = errors
    yield pg
    ctx.close()


def serve(store, session_id, **kw):
    server = ReviewServer(store, session_id, port=0, **kw)
    server.start()
    return server


def wait_ready(page, position: int, n: int):
    from playwright.sync_api import expect

    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#position")).to_have_text(f"Pair {position} of {n}")


def wait_saved(page):
    from playwright.sync_api import expect

    # (not wait_for_function: the page's CSP forbids the eval it relies on)
    expect(page.locator("body")).not_to_have_attribute("data-saving", "yes")


def test_whole_session_by_keyboard_with_reload_and_known_answer(store, page):
    from playwright.sync_api import expect

    run = make_run(store, 24)
    sid = create_session(store, run, n=20, seed=11).session.session_id
    server = serve(store, sid, reviewer="alice")
    try:
        page.goto(server.url)
        wait_ready(page, 1, 20)
        expect(page.locator("#progress-text")).to_have_text("0 / 20 reviewed")
        t0 = time.perf_counter()
        for i in range(20):
            if i == 10:  # reload mid-session: it resumes at the first unanswered pair
                wait_saved(page)
                page.reload()
                wait_ready(page, 11, 20)
                expect(page.locator("#progress-text")).to_have_text("10 / 20 reviewed")
            else:
                expect(page.locator("#position")).to_have_text(f"Pair {i + 1} of 20")
            good_is_a = page.locator("#output-a").inner_text().startswith("GOOD")
            bad_side = "b" if good_is_a else "a"
            if i == 3:  # the reference, a note: before the verdict, which moves on
                page.keyboard.press("r")
                expect(page.locator("#reference-box")).to_be_visible()
                page.keyboard.press("n")
                page.keyboard.type("j and k typed here are text, not navigation")
                page.keyboard.press("Escape")
                expect(page.locator("#position")).to_have_text("Pair 4 of 20")
            # one key per pair: the verdict saves and moves on to the next unanswered pair
            if i < 12:
                page.keyboard.press("1" if good_is_a else "2")
            elif i < 16:  # the baseline is preferred here, and its output would not ship: a / b first
                page.keyboard.press(bad_side)
                expect(page.locator(f"#ship-{bad_side}")).to_have_attribute("data-value", "no")
                page.keyboard.press("2" if good_is_a else "1")
            elif i < 18:
                page.keyboard.press("3")
            else:
                page.keyboard.press("4")
        wait_saved(page)
        elapsed = time.perf_counter() - t0
        expect(page.locator("#progress-text")).to_have_text("20 / 20 reviewed")
        expect(page.locator("#done")).to_be_visible()
        # the last verdict had nowhere to move on to; k goes back, changing nothing keeps everything
        expect(page.locator("#position")).to_have_text("Pair 20 of 20")
        page.keyboard.press("k")
        expect(page.locator("#position")).to_have_text("Pair 19 of 20")
        # with "Move on after a verdict" off, a verdict stays on its pair (the setting is remembered)
        page.locator("#auto-advance").uncheck()
        page.keyboard.press("3")
        page.keyboard.press("4")  # pair 19's answer again (both bad)
        expect(page.locator("#position")).to_have_text("Pair 19 of 20")
        wait_saved(page)
        page.reload()
        wait_ready(page, 20, 20)
        expect(page.locator("#auto-advance")).not_to_be_checked()
        page.keyboard.press("k")
        expect(page.locator("#position")).to_have_text("Pair 19 of 20")
        page.keyboard.press("3")
        page.keyboard.press("4")  # back to its answer
        expect(page.locator("#position")).to_have_text("Pair 19 of 20")
        wait_saved(page)
    finally:
        server.stop()
    assert not page.errors, page.errors
    verdicts = reviewer_verdicts(store, sid, "alice")
    assert len(verdicts) == 20 and all(v.verdict for v in verdicts)
    assert [v.note for v in verdicts if v.note] == ["j and k typed here are text, not navigation"]
    res = unblind(store, sid)
    assert res["verdicts"] == {"a_better": 12, "b_better": 4, "tie": 2, "both_bad": 2}
    assert res["win_rate"]["rate"] == pytest.approx(0.75)
    assert res["unshippable"][CAND]["count"] == 2 and res["unshippable"][CAND]["passed"] is True
    assert res["unshippable"][BASE]["count"] == 6 and res["unshippable"][BASE]["passed"] is False
    assert elapsed < 60, f"20 pairs by keyboard took {elapsed:.1f}s"


def test_nothing_the_page_loads_identifies_a_model(store, page):
    from playwright.sync_api import expect

    run = make_run(store, 6, suite="suite-okapi")
    session = create_session(store, run, n=6, seed=3).session
    server = serve(store, session.session_id)  # no default reviewer: the page asks for a name
    loaded: list[str] = []

    def record(resp):
        try:
            body = resp.text()
        except Exception:  # noqa: BLE001 (a body-less response)
            body = ""
        loaded.append(resp.url + "\n" + json.dumps(resp.headers) + "\n" + body)

    page.on("response", record)
    try:
        page.goto(server.url)
        expect(page.locator("#name-form")).to_be_visible()
        page.fill("#name-input", "dora")
        page.press("#name-input", "Enter")
        wait_ready(page, 1, 6)
        for i in range(6):
            expect(page.locator("#position")).to_have_text(f"Pair {i + 1} of 6")
            page.keyboard.press("r")
            page.keyboard.press("3")  # the verdict moves on to the next pair
        wait_saved(page)
        page.reload()  # the name is remembered in this browser
        expect(page.locator("#reviewer-label")).to_have_text("Reviewer: dora")
        loaded.append(page.content())
        loaded.append(page.evaluate("JSON.stringify(window.localStorage)"))
        loaded.append(page.evaluate("document.cookie"))
    finally:
        server.stop()
    assert len(loaded) > 10
    assert any("/api/pair/" in x for x in loaded) and any("GOOD answer" in x for x in loaded)
    everything = "\n".join(loaded)
    for secret in (CAND, BASE, CAND_PATH, BASE_PATH, CAND_ID, BASE_ID, session.run_id, session.session_id, "suite-okapi",
                   "secret-adapter", "walrus", "zebra"):
        assert secret not in everything, f"{secret!r} reached the browser"
    assert not re.search(r"left_model|model_a|model_b|candidate|baseline", everything)
    assert len(reviewer_verdicts(store, session.session_id, "dora")) == 6
    assert not page.errors, page.errors


HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b id="bold">bold?</b>'


def test_html_in_model_output_is_shown_as_text(store, page):
    from playwright.sync_api import expect

    run = make_run(
        store, 2,
        cand_output=lambda i: HOSTILE,
        base_output=lambda i: '</pre><h1 id="injected">injected</h1><iframe src="javascript:window.__pwned=3"></iframe>',
    )
    sid = create_session(store, run, n=2, seed=0).session.session_id
    server = serve(store, sid, reviewer="eve")
    try:
        page.goto(server.url)
        wait_ready(page, 1, 2)
        outputs = {page.locator("#output-a").text_content(), page.locator("#output-b").text_content()}
        assert HOSTILE in outputs
        assert page.locator("#bold").count() == 0 and page.locator("#injected").count() == 0
        assert page.locator("iframe").count() == 0 and page.locator("main img").count() == 0
        page.keyboard.press("1")
        page.keyboard.press("j")
        expect(page.locator("#position")).to_have_text("Pair 2 of 2")
        wait_saved(page)
        assert page.evaluate("window.__pwned") is None
        shot = page.screenshot(full_page=True)
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
    finally:
        server.stop()
    assert not page.errors, page.errors


def test_two_reviewers_keep_separate_answers(store, browser):
    from playwright.sync_api import expect

    run = make_run(store, 4)
    sid = create_session(store, run, n=4, seed=8).session.session_id
    server = serve(store, sid)
    try:
        for name, key in (("fay", "1"), ("gus", "2")):
            ctx = browser.new_context()
            pg = ctx.new_page()
            pg.goto(server.url + f"?reviewer={name}")
            wait_ready(pg, 1, 4)
            for i in range(4):
                expect(pg.locator("#position")).to_have_text(f"Pair {i + 1} of 4")
                pg.keyboard.press(key)  # moves on by itself
            wait_saved(pg)
            ctx.close()
    finally:
        server.stop()
    res = unblind(store, sid)
    assert res["reviewers"] == ["fay", "gus"]
    pair = res["reviewer_agreement"]["pairs"][0]
    # fay always picked the left side, gus the right: they disagree on every pair
    assert pair["n"] == 4 and pair["agreement"] == 0.0
