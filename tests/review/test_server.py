"""The review server over real HTTP (no browser): API shape, blinding, saving, refusals."""

from __future__ import annotations

import http.client
import json
from importlib import resources

import pytest

from evalkit.review import ReviewServer, create_session, reviewer_verdicts, session_pairs

from .conftest import BASE, BASE_ID, BASE_PATH, CAND, CAND_ID, CAND_PATH, make_run


def request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    hdrs = {"Host": f"127.0.0.1:{server.port}"}
    if body is not None:
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    conn.request(method, path, body=None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode()), headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.title(): v for k, v in resp.getheaders()}, data  # header names are case-insensitive


@pytest.fixture
def served(store):
    run = make_run(store, 6, suite="suite-okapi")
    session = create_session(store, run, n=6, seed=9).session
    server = ReviewServer(store, session.session_id, port=0)
    server.start()
    yield store, session, server
    server.stop()


def test_api_is_blind(served):
    store, session, server = served
    secrets_ = [CAND, BASE, CAND_PATH, BASE_PATH, CAND_ID, BASE_ID, session.run_id, "suite-okapi", "left_model"]
    bodies = []
    for path in ("/", "/app.js", "/app.css", "/api/session", "/api/session?reviewer=alice"):
        status, headers, data = request(server, "GET", path)
        assert status == 200
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        bodies.append(data.decode() + json.dumps(headers))
    s = json.loads(request(server, "GET", "/api/session?reviewer=alice")[2])
    assert set(s) == {"n", "tokens", "reviewer", "answers"} and s["n"] == 6
    assert s["tokens"] == [p.token for p in session_pairs(store, session.session_id)]
    for tok in s["tokens"]:
        status, headers, data = request(server, "GET", f"/api/pair/{tok}")
        assert status == 200
        pair = json.loads(data)
        # exactly these keys, the same for every pair: nothing tells the sides apart but the outputs
        assert set(pair) == {"token", "index", "messages", "reference", "output_a", "output_b"}
        assert {pair["output_a"].split()[0], pair["output_b"].split()[0]} == {"GOOD", "BAD"}
        bodies.append(data.decode() + json.dumps(headers))
    for body in bodies:
        for secret in secrets_:
            assert secret not in body, f"{secret!r} leaked"


def test_verdicts_saved_in_page_terms(served):
    store, session, server = served
    tok = session_pairs(store, session.session_id)[0].token
    status, _, data = request(server, "POST", "/api/verdict", {"token": tok, "reviewer": "alice", "verdict": "b", "ship_a": False, "ship_b": True, "note": "<b>x</b>"})
    assert status == 200 and json.loads(data) == {"saved": True, "done": 1, "n": 6}
    (v,) = reviewer_verdicts(store, session.session_id, "alice")
    assert (v.token, v.verdict, v.ship_left, v.ship_right, v.note, v.source) == (tok, "right", False, True, "<b>x</b>", "web")
    # changing one's mind overwrites; another reviewer is separate
    request(server, "POST", "/api/verdict", {"token": tok, "reviewer": "alice", "verdict": "tie", "ship_a": True, "ship_b": True, "note": ""})
    request(server, "POST", "/api/verdict", {"token": tok, "reviewer": "bob", "verdict": "a", "ship_a": None, "ship_b": None, "note": ""})
    assert [(v.reviewer, v.verdict) for v in reviewer_verdicts(store, session.session_id)] == [("alice", "tie"), ("bob", "left")]
    s = json.loads(request(server, "GET", "/api/session?reviewer=alice")[2])
    assert s["answers"] == {tok: {"verdict": "tie", "ship_a": True, "ship_b": True, "note": ""}}


def test_refusals(served):
    store, session, server = served
    tok = session_pairs(store, session.session_id)[0].token
    ok = {"token": tok, "reviewer": "alice", "verdict": "a", "ship_a": True, "ship_b": True, "note": ""}
    assert request(server, "GET", "/api/pair/nope")[0] == 404
    assert request(server, "POST", "/api/verdict", {**ok, "token": "nope"})[0] == 404
    assert request(server, "POST", "/api/verdict", {**ok, "verdict": "left"})[0] == 400
    assert request(server, "POST", "/api/verdict", {**ok, "ship_a": "yes"})[0] == 400
    assert request(server, "POST", "/api/verdict", {**ok, "reviewer": ""})[0] == 400  # no --reviewer default
    assert request(server, "POST", "/api/verdict", b"not json")[0] == 400
    # cross-site: a form post (not JSON), a foreign Origin, a rebinding Host
    assert request(server, "POST", "/api/verdict", json.dumps(ok).encode(), {"Content-Type": "text/plain"})[0] == 415
    assert request(server, "POST", "/api/verdict", ok, {"Origin": "http://evil.example"})[0] == 403
    # another local server (another port, or https) is another origin: scheme, host and port must match
    assert request(server, "POST", "/api/verdict", ok, {"Origin": f"http://127.0.0.1:{server.port + 1}"})[0] == 403
    assert request(server, "POST", "/api/verdict", ok, {"Origin": "http://localhost"})[0] == 403
    assert request(server, "POST", "/api/verdict", ok, {"Origin": f"https://127.0.0.1:{server.port}"})[0] == 403
    assert request(server, "POST", "/api/verdict", ok, {"Origin": "http://127.0.0.1:notaport"})[0] == 403
    assert request(server, "GET", "/api/session", headers={"Host": "evil.example:80"})[0] == 403
    assert reviewer_verdicts(store, session.session_id) == []
    # the page's own origin is accepted
    assert request(server, "POST", "/api/verdict", ok, {"Origin": f"http://127.0.0.1:{server.port}"})[0] == 200


def test_default_reviewer_and_port_in_use(store):
    run = make_run(store, 2)
    sid = create_session(store, run, n=2).session.session_id
    server = ReviewServer(store, sid, port=0, reviewer="carol")
    server.start()
    try:
        assert json.loads(request(server, "GET", "/api/session")[2])["reviewer"] == "carol"
        tok = session_pairs(store, sid)[1].token
        assert request(server, "POST", "/api/verdict", {"token": tok, "verdict": "tie", "ship_a": True, "ship_b": True})[0] == 200
        assert reviewer_verdicts(store, sid)[0].reviewer == "carol"
        from evalkit.errors import UserError

        with pytest.raises(UserError, match="--port"):
            ReviewServer(store, sid, port=server.port)
    finally:
        server.stop()


def test_page_script_never_parses_text_as_html():
    js = resources.files("evalkit.review").joinpath("static", "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js
    html = resources.files("evalkit.review").joinpath("static", "index.html").read_text()
    assert "<script>" not in html  # no inline script: the CSP forbids it anyway
