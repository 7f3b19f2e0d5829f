"""A team session in real headless Chromium: two reviewers in two browser contexts, each with their own
private link, answering by keyboard at the same time; a context with no link and one with a revoked
link see nothing; a page on another origin cannot post a verdict; alpha equals the `krippendorff`
package's on the stored verdicts.
"""

from __future__ import annotations

import http.server
import threading
from collections import Counter

import pytest

from evalkit.review import ReviewServer, create_session, reviewer_verdicts, session_pairs, unblind
from evalkit.review.sessions import assign_reviewers, revoke_reviewer
from evalkit.review.unblind import to_model_verdict

from .conftest import BASE, BASE_ID, CAND, CAND_ID, make_run
from .test_browser import browser  # noqa: F401 - the module's Chromium fixture

pytestmark = pytest.mark.browser
N = 10


def new_page(browser):  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    return ctx, pg


def other_origin_page(review_port: int, token: str, pair: str) -> tuple[http.server.ThreadingHTTPServer, int]:
    """A page on another port (another origin) that tries to post a verdict with a stolen-looking link token."""
    html = f"""<!doctype html><body><pre id=out>...</pre><script>
    async function go() {{
      const res = [];
      for (const opts of [
        {{method: "POST", headers: {{"Content-Type": "application/json", "X-Review-Token": "{token}"}},
          body: JSON.stringify({{token: "{pair}", verdict: "b", ship_a: false, ship_b: false, note: "csrf"}})}},
        {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
          body: JSON.stringify({{token: "{pair}", verdict: "b", note: "csrf"}})}},
      ]) {{
        try {{ const r = await fetch("http://127.0.0.1:{review_port}/api/verdict", opts); res.push("status " + r.status + " " + r.type); }}
        catch (e) {{ res.push("blocked"); }}
      }}
      document.getElementById("out").textContent = res.join(" | ");
    }}
    go();
    </script></body>""".encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def test_two_reviewers_at_once_by_keyboard_then_no_link_revoked_and_cross_origin(store, browser):  # noqa: F811
    import numpy as np
    from krippendorff import alpha as package_alpha
    from playwright.sync_api import expect

    run = make_run(store, 14)
    sid = create_session(store, run, n=N, seed=5).session.session_id
    links = assign_reviewers(store, sid, ["alice", "bob"], overlap=2, seed=5)
    server = ReviewServer(store, sid, port=0)
    server.start()
    contexts = []
    try:
        pages = {}
        for name, token in links.items():
            ctx, pg = new_page(browser)
            contexts.append(ctx)
            pg.goto(f"{server.url}r/{token}")
            expect(pg.locator("body")).to_have_attribute("data-ready", "true")
            expect(pg.locator("#reviewer-label")).to_have_text(f"Reviewer: {name}")
            pages[name] = pg
        # both at once: one key each per pair, alternating between the two browsers
        for i in range(N):
            for name, pg in pages.items():
                expect(pg.locator("#position")).to_have_text(f"Pair {i + 1} of {N}")
                good_is_a = pg.locator("#output-a").inner_text().startswith("GOOD")
                if name == "alice" or i % 3:  # alice always prefers the good output; bob does on 2 of 3
                    pg.keyboard.press("1" if good_is_a else "2")
                else:
                    pg.keyboard.press("3")
        for pg in pages.values():
            expect(pg.locator("body")).not_to_have_attribute("data-saving", "yes")
            expect(pg.locator("#progress-text")).to_have_text(f"{N} / {N} reviewed")
            # nothing in the page names a model
            text = pg.content()
            for secret in (CAND, BASE, CAND_ID, BASE_ID):
                assert secret not in text
        verdicts = reviewer_verdicts(store, sid)
        assert sorted(Counter(v.reviewer for v in verdicts).items()) == [("alice", N), ("bob", N)]
        assert all(v.source == "web" for v in verdicts)

        # alpha over both reviewers equals the krippendorff package's on the stored verdicts
        res = unblind(store, sid)
        left = {p.token: p.left_model for p in session_pairs(store, sid)}
        tokens = sorted(left)
        cats = sorted({to_model_verdict(v.verdict, left[v.token]) for v in verdicts})
        data = np.full((2, len(tokens)), np.nan)
        for v in verdicts:
            data[["alice", "bob"].index(v.reviewer), tokens.index(v.token)] = cats.index(to_model_verdict(v.verdict, left[v.token]))
        expected = package_alpha(reliability_data=data, level_of_measurement="nominal")
        assert res["reviewer_agreement"]["krippendorff_alpha"]["alpha"] == pytest.approx(expected, abs=1e-4)
        assert len(res["disagreements"]) == sum(1 for i in range(N) if i % 3 == 0)

        # a third browser with no link, and bob's link once revoked: 401, nothing shown
        ctx, nolink = new_page(browser)
        contexts.append(ctx)
        for path in ("", "api/session", f"api/pair/{tokens[0]}"):
            assert nolink.goto(f"{server.url}{path}").status == 401
        assert "GOOD" not in nolink.content() and "BAD" not in nolink.content()
        revoke_reviewer(store, sid, "bob")
        bob = pages["bob"]
        assert bob.goto(f"{server.url}r/{links['bob']}").status == 401
        r = bob.request.get(f"{server.url}api/session", headers={"X-Review-Token": links["bob"]})
        assert r.status == 401 and "GOOD" not in r.text()

        # a page on another port: the browser's preflight fails (no CORS), the no-cors form post is refused
        before = [(v.reviewer, v.token, v.verdict, v.note) for v in reviewer_verdicts(store, sid)]
        srv, other = other_origin_page(server.port, links["alice"], tokens[0])
        try:
            ctx, evil = new_page(browser)
            contexts.append(ctx)
            evil.goto(f"http://127.0.0.1:{other}/")
            expect(evil.locator("#out")).not_to_have_text("...")
            assert evil.locator("#out").inner_text().startswith("blocked")
        finally:
            srv.shutdown()
            srv.server_close()
        assert [(v.reviewer, v.token, v.verdict, v.note) for v in reviewer_verdicts(store, sid)] == before
    finally:
        for ctx in contexts:
            ctx.close()
        server.stop()
