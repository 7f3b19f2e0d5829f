"""A team session over real HTTP (uvicorn): balanced assignments, private links stored hashed, 401
without a valid link on every API route, each reviewer seeing only their own pairs and answers,
revocation taking effect on a running server, CSRF refusals, `review new/revoke/status` CLI.
"""

from __future__ import annotations

import hashlib
import http.client
import json
from collections import Counter

import pytest

from evalkit.cli import main
from evalkit.errors import UserError
from evalkit.review import ReviewServer, create_session, reviewer_verdicts, session_pairs
from evalkit.review.sessions import assign_reviewers, revoke_reviewer, team
from evalkit.store import Store

from .conftest import BASE, BASE_ID, BASE_PATH, CAND, CAND_ID, CAND_PATH, make_run

IDENTITY = [CAND, BASE, CAND_PATH, BASE_PATH, CAND_ID, BASE_ID, "left_model", "suite-okapi"]


@pytest.fixture
def store(store_url):
    """Every test here runs on a SQLite file and on a PostgreSQL database."""
    st = Store(store_url)
    yield st
    st.close()


def request(port, method, path, body=None, token=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    hdrs = {"Host": f"127.0.0.1:{port}"}
    if token is not None:
        hdrs["X-Review-Token"] = token
    if body is not None:
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    conn.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


@pytest.fixture
def team_session(store):
    run = make_run(store, 12, suite="suite-okapi")
    sid = create_session(store, run, n=12, seed=3).session.session_id
    links = assign_reviewers(store, sid, ["alice", "bob", "carol"], overlap=2, seed=3)
    return sid, links


def test_assignments_are_balanced_seeded_and_links_stored_hashed(store, team_session):
    sid, links = team_session
    rows = list(store.execute("SELECT token, reviewer FROM review_assignments WHERE session_id = ?", (sid,)))
    per_pair = Counter(t for t, _ in rows)
    assert set(per_pair.values()) == {2} and len(per_pair) == 12  # every pair to exactly 2 reviewers
    assert all(len({r for t2, r in rows if t2 == t}) == 2 for t in per_pair)  # two different ones
    load = Counter(r for _, r in rows)
    assert max(load.values()) - min(load.values()) <= 1 and sum(load.values()) == 24
    # the plaintext link token is nowhere in the store: only its SHA-256
    stored = {r: h for r, h in store.execute("SELECT reviewer, token_hash FROM review_reviewers WHERE session_id = ?", (sid,))}
    assert stored == {r: hashlib.sha256(t.encode()).hexdigest() for r, t in links.items()}
    dump = json.dumps([list(r) for t in ("review_reviewers", "review_assignments") for r in store.execute(f"SELECT * FROM {t}")])
    assert not any(t in dump for t in links.values())
    # the same seed gives the same assignment
    run2 = make_run(store, 12, suite="suite-okapi")
    sid2 = create_session(store, run2, n=12, seed=3).session.session_id
    assign_reviewers(store, sid2, ["alice", "bob", "carol"], overlap=2, seed=3)
    again = sorted((dict((p.token, p.position) for p in session_pairs(store, sid2))[t], r)
                   for t, r in store.execute("SELECT token, reviewer FROM review_assignments WHERE session_id = ?", (sid2,)))
    first = sorted((dict((p.token, p.position) for p in session_pairs(store, sid))[t], r) for t, r in rows)
    assert again == first
    with pytest.raises(UserError, match="--overlap"):
        assign_reviewers(store, sid2, ["x"], overlap=2)
    with pytest.raises(UserError, match="already has reviewers"):
        assign_reviewers(store, sid2, ["dana", "erin"], overlap=1)


def test_a_team_server_admits_only_valid_links_and_shows_each_reviewer_their_own(store, team_session):
    sid, links = team_session
    server = ReviewServer(store, sid, host="127.0.0.1", port=0)
    server.start()
    port = server.port
    try:
        assert server.team
        # no token, a wrong one: 401 everywhere, and the body says nothing about the session
        any_pair = session_pairs(store, sid)[0].token
        for token in (None, "nope", links["alice"][:-1] + ("A" if links["alice"][-1] != "A" else "B")):
            for method, path, body in (("GET", "/api/session", None), ("GET", f"/api/pair/{any_pair}", None),
                                       ("POST", "/api/verdict", {"token": any_pair, "verdict": "a"}), ("GET", "/", None),
                                       ("GET", f"/r/{token or 'x'}", None)):
                status, _, data = request(port, method, path, body, token=token)
                assert status == 401, (token, path, status)
                assert set(json.loads(data)) == {"error"} and "12" not in data.decode()
        # each reviewer: only their assigned pairs, in page order; their own answers only
        assigned = {r: {t for t, rr in store.execute("SELECT token, reviewer FROM review_assignments") if rr == r} for r in links}
        order = [p.token for p in session_pairs(store, sid)]
        bodies = []
        for r, tok in links.items():
            status, headers, data = request(port, "GET", "/api/session", token=tok)
            s = json.loads(data)
            assert status == 200 and s["reviewer"] == r and s["n"] == len(assigned[r]) == 8
            assert s["tokens"] == [t for t in order if t in assigned[r]]
            assert "script-src 'self'" in headers["content-security-policy"]
            bodies.append(data.decode())
            for t in s["tokens"]:
                bodies.append(request(port, "GET", f"/api/pair/{t}", token=tok)[2].decode())
            other = next(t for t in order if t not in assigned[r])
            assert request(port, "GET", f"/api/pair/{other}", token=tok)[0] == 404  # not theirs
            assert request(port, "POST", "/api/verdict", {"token": other, "verdict": "a"}, token=tok)[0] == 404
            status, _, page = request(port, "GET", f"/r/{tok}")
            assert status == 200 and b"app.js" in page
        for body in bodies:
            for secret in IDENTITY + [server.session_id]:
                assert secret not in body, secret
        # the body's "reviewer" is ignored: the link says who answers
        t = sorted(assigned["alice"])[0]
        st, _, data = request(port, "POST", "/api/verdict", {"token": t, "reviewer": "bob", "verdict": "a", "ship_a": True, "ship_b": True},
                              token=links["alice"], headers={"Origin": f"http://127.0.0.1:{port}"})
        assert st == 200 and json.loads(data) == {"saved": True, "done": 1, "n": 8}
        assert [(v.reviewer, v.token) for v in reviewer_verdicts(store, sid)] == [("alice", t)]
        bob_sees = json.loads(request(port, "GET", "/api/session", token=links["bob"])[2])
        assert bob_sees["answers"] == {}
        # CSRF: another origin (another port, another scheme, another host) is refused even with a valid link
        for origin in (f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}", "http://evil.example"):
            assert request(port, "POST", "/api/verdict", {"token": t, "verdict": "b"}, token=links["alice"], headers={"Origin": origin})[0] == 403
        assert request(port, "POST", "/api/verdict", {"token": t, "verdict": "b"}, token=links["alice"], headers={"Content-Type": "text/plain"})[0] == 415
        assert reviewer_verdicts(store, sid)[0].verdict == "left"
        # revoked (from the store, as another process would): 401 from the next request on
        revoke_reviewer(store, sid, "alice")
        assert request(port, "GET", "/api/session", token=links["alice"])[0] == 401
        assert request(port, "GET", "/api/session", token=links["bob"])[0] == 200
        new = revoke_reviewer(store, sid, "alice", reissue=True)
        assert request(port, "GET", "/api/session", token=new)[0] == 200 and request(port, "GET", "/api/session", token=links["alice"])[0] == 401
    finally:
        server.stop()


def test_serving_beyond_loopback_needs_reviewer_links(store):
    run = make_run(store, 4)
    sid = create_session(store, run, n=4).session.session_id
    with pytest.raises(UserError, match="needs reviewer links"):
        ReviewServer(store, sid, host="0.0.0.0", port=0)


def test_team_cli_new_status_revoke(store, capsys):
    run = make_run(store, 10)
    db = str(store.path)
    assert main(["review", "new", run, "--n", "9", "--reviewers", "alice,bob,carol", "--overlap", "2", "--url", "http://review-box:9000",
                 "--store", db]) == 0
    out = capsys.readouterr().out.splitlines()
    sid = out[-1]
    link_lines = [line for line in out if "http://review-box:9000/r/" in line]
    assert len(link_lines) == 3 and any("--host 0.0.0.0 --port 9000" in line for line in out)
    assert [m.assigned for m in team(store, sid)] == [6, 6, 6]
    assert main(["review", "status", sid, "--store", db]) == 0
    status = capsys.readouterr().out
    assert "alice" in status and "0/6" in status
    assert main(["review", "revoke", sid, "bob", "--store", db]) == 0
    assert main(["review", "status", sid, "--store", db]) == 0
    assert "(link revoked)" in capsys.readouterr().out
    assert main(["review", "revoke", sid, "bob", "--reissue", "--url", "http://review-box:9000", "--store", db]) == 0
    assert "http://review-box:9000/r/" in capsys.readouterr().out
    # bad input: one line, exit 2, and no half-made session
    before = len(list(store.execute("SELECT * FROM review_sessions")))
    for args, what in ((["--reviewers", "alice,alice"], "twice"), (["--reviewers", "a,b", "--overlap", "3"], "--overlap"),
                       (["--reviewers", "a,b", "--url", "ftp://x"], "--url")):
        assert main(["review", "new", run, "--n", "4", *args, "--store", db]) == 2
        assert what in capsys.readouterr().err
    assert len(list(store.execute("SELECT * FROM review_sessions"))) == before
    assert main(["review", "revoke", sid, "zed", "--store", db]) == 2
    assert "not a reviewer" in capsys.readouterr().err


def test_cli_serve_a_team_on_all_interfaces(store, team_session):
    """`review serve --host 0.0.0.0` for a team session (reached here over loopback); a single-user
    session refuses to leave loopback, one line, exit 2.
    """
    import re
    import signal
    import subprocess
    import sys

    sid, links = team_session
    proc = subprocess.Popen([sys.executable, "-m", "evalkit.cli", "review", "serve", sid, "--host", "0.0.0.0", "--port", "0", "--store", str(store.path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        port = int(re.search(r"on 0\.0\.0\.0:(\d+)", line).group(1))
        assert request(port, "GET", "/api/session")[0] == 401
        status, _, data = request(port, "GET", "/api/session", token=links["carol"], headers={"Host": f"review-box:{port}"})
        assert status == 200 and json.loads(data)["reviewer"] == "carol"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err, err
    single = create_session(store, make_run(store, 3), n=3).session.session_id
    r = subprocess.run([sys.executable, "-m", "evalkit.cli", "review", "serve", single, "--host", "0.0.0.0", "--port", "0", "--store", str(store.path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "needs reviewer links" in r.stderr and len(r.stderr.strip().splitlines()) == 1
