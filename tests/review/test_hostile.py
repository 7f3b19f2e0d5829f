"""Hostile requests to the review server get a clean 4xx, never a 500: deeply nested JSON, verdicts of
the wrong type, oversized and chunked bodies, bytes that are not UTF-8. Real server (uvicorn), real HTTP.
"""

from __future__ import annotations

import http.client
import json

import pytest

from evalkit.review import ReviewServer, create_session, reviewer_verdicts
from evalkit.review.sessions import assign_reviewers
from evalkit.store import Store

from .conftest import make_run
from .test_team import request


@pytest.fixture
def served(store_url):
    st = Store(store_url)
    run = make_run(st, 6, suite="suite-okapi")
    sid = create_session(st, run, n=6, seed=1).session.session_id
    links = assign_reviewers(st, sid, ["alice"], overlap=1, seed=1)
    server = ReviewServer(st, sid, host="127.0.0.1", port=0)
    server.start()
    try:
        yield st, sid, server.port, links["alice"]
    finally:
        server.stop()
        st.close()


def raw_post(port: int, token: str, body: bytes, *, chunked: bool = False, ctype: str = "application/json") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    headers = {"Host": f"127.0.0.1:{port}", "X-Review-Token": token, "Content-Type": ctype}
    if chunked:
        conn.putrequest("POST", "/api/verdict", skip_host=True)
        for k, v in {**headers, "Transfer-Encoding": "chunked"}.items():
            conn.putheader(k, v)
        conn.endheaders()
        try:
            for i in range(0, len(body), 1 << 16):
                piece = body[i : i + (1 << 16)]
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body went out: what we want
    else:
        conn.request("POST", "/api/verdict", body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def test_hostile_verdict_bodies_get_a_4xx_and_change_nothing(served):
    st, sid, port, token = served
    pair = json.loads(request(port, "GET", "/api/session", token=token)[2])["tokens"][0]
    table = [
        ("60 KB of nested arrays", b"[" * 30_000 + b"]" * 30_000, 400),
        ("nested objects in the verdict", json.dumps({"token": pair, "verdict": {"a": {"b": {"c": {"d": 1}}}}}).encode(), 400),
        ("the verdict is a list", json.dumps({"token": pair, "verdict": ["a"]}).encode(), 400),
        ("the verdict is an object", json.dumps({"token": pair, "verdict": {"x": 1}}).encode(), 400),
        ("the verdict is a number", json.dumps({"token": pair, "verdict": 1}).encode(), 400),
        ("an unknown verdict", json.dumps({"token": pair, "verdict": "definitely"}).encode(), 400),
        ("the token is a list", json.dumps({"token": [pair], "verdict": "a"}).encode(), 400),
        ("ship_a is a string", json.dumps({"token": pair, "verdict": "a", "ship_a": "yes"}).encode(), 400),
        ("the note is an object", json.dumps({"token": pair, "verdict": "a", "note": {"x": 1}}).encode(), 400),
        ("a body that is a list", b'["a", "b"]', 400),
        ("not JSON", b"verdict=a", 400),
        ("not UTF-8", b'{"token": "\xff\xfe", "verdict": "a"}', 400),
        ("a lone surrogate escape", json.dumps({"token": pair, "verdict": "a", "note": "\ud800"}).encode(), 200),
        ("NaN and a huge number", b'{"token": "' + pair.encode() + b'", "verdict": "a", "ship_a": NaN, "n": 1e999}', 400),
        ("an unknown pair", json.dumps({"token": "nope", "verdict": "a"}).encode(), 404),
        ("200 KB in one body", json.dumps({"token": pair, "verdict": "a", "note": "x" * 200_000}).encode(), 413),
    ]
    for name, body, want in table:
        status, data = raw_post(port, token, body)
        assert status == want, (name, status, data[:200])
        assert set(json.loads(data)) <= {"error", "saved", "done", "n"}, name
    # only the well-formed one was saved
    saved = reviewer_verdicts(st, sid, "alice")
    assert len(saved) == 1 and saved[0].note == "\ud800"


def test_a_chunked_body_over_the_limit_is_refused_as_soon_as_it_passes_it(served):
    _, _, port, token = served
    status, data = raw_post(port, token, b"x" * (50 << 20), chunked=True)
    assert status == 413 and json.loads(data) == {"error": "body too large"}
    # and the server is still answering
    assert request(port, "GET", "/api/session", token=token)[0] == 200
