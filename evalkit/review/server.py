"""The review page's local web server (stdlib ``http.server``, bound to 127.0.0.1).

Routes (everything the page loads):
  GET  /                       the page (static; the same bytes for every session)
  GET  /app.js, /app.css       its script and style (static)
  GET  /api/session?reviewer=  {n, tokens, reviewer, answers}: the pairs' opaque tokens in page order
                               and this reviewer's answers so far
  GET  /api/pair/<token>       {token, index, messages, reference, output_a, output_b}
  POST /api/verdict            {token, reviewer, verdict: a|b|tie|both_bad|null, ship_a, ship_b, note}

Blinding: responses carry no model name, path, id, run id, suite or sample id, and nothing that
differs between the sides except the outputs. "a"/"b" in the API are the page's sides (left/right),
translated to models only in the store, only by ``unblind``. A strict Content-Security-Policy keeps
even a mis-escaped model output from running script; the page itself inserts text with textContent.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import UserError
from ..store import Store
from .sessions import BlindPair, blind_pairs, clean_reviewer, get_session, reviewer_verdicts, save_verdicts

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SIDE_TO_VERDICT = {"a": "left", "b": "right", "tie": "tie", "both_bad": "both_bad", None: None}
_VERDICT_TO_SIDE = {v: k for k, v in _SIDE_TO_VERDICT.items()}
_MAX_BODY = 64 * 1024


def _static(name: str) -> bytes:
    return resources.files("evalkit.review").joinpath("static", name).read_bytes()


@dataclass
class _State:
    store: Store
    session_id: str
    pairs: list[BlindPair]
    by_token: dict[str, BlindPair]
    default_reviewer: str | None
    lock: threading.Lock
    quiet: bool


class _Handler(BaseHTTPRequestHandler):
    server_version = "evalkit-review"
    sys_version = ""
    state: _State  # set on the subclass made per server

    # --- plumbing ---------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        if not self.state.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _host_ok(self) -> bool:
        # A page on another site could point a DNS name at 127.0.0.1 (DNS rebinding): serve loopback names only.
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        return host in ("127.0.0.1", "localhost", "::1")

    def _same_origin(self, origin: str) -> bool:
        """The page's own origin: scheme, loopback host *and* this server's port (another local
        server on another port is another origin).
        """
        try:
            o = urlsplit(origin)
            port = o.port or (443 if o.scheme == "https" else 80)
        except ValueError:
            return False
        return o.scheme == "http" and o.hostname in ("127.0.0.1", "localhost", "::1") and port == self.server.server_address[1]  # type: ignore[index]  # an (host, port) pair for AF_INET

    # --- GET --------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "this server answers on 127.0.0.1 only")
        url = urlsplit(self.path)
        if url.path in _STATIC:
            name, ctype = _STATIC[url.path]
            return self._send(HTTPStatus.OK, _static(name), ctype)
        if url.path == "/api/session":
            q = parse_qs(url.query)
            reviewer = (q.get("reviewer") or [""])[0].strip() or self.state.default_reviewer
            return self._json(HTTPStatus.OK, self._session(reviewer))
        if url.path.startswith("/api/pair/"):
            token = url.path.removeprefix("/api/pair/")
            pair = self.state.by_token.get(token)
            if pair is None:
                return self._error(HTTPStatus.NOT_FOUND, "no such pair")
            return self._json(HTTPStatus.OK, {
                "token": pair.token,
                "index": pair.position,
                "messages": [{"role": r, "content": c} for r, c in pair.messages],
                "reference": pair.reference,
                "output_a": pair.output_left,
                "output_b": pair.output_right,
            })
        if url.path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        return self._error(HTTPStatus.NOT_FOUND, "not found")

    do_HEAD = do_GET

    def _session(self, reviewer: str | None) -> dict[str, Any]:
        answers: dict[str, Any] = {}
        if reviewer:
            with self.state.lock:
                recs = reviewer_verdicts(self.state.store, self.state.session_id, reviewer)
            answers = {v.token: _answer(v.verdict, v.ship_left, v.ship_right, v.note) for v in recs}
        return {
            "n": len(self.state.pairs),
            "tokens": [p.token for p in self.state.pairs],
            "reviewer": reviewer,
            "answers": answers,
        }

    # --- POST -------------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "this server answers on 127.0.0.1 only")
        origin = self.headers.get("Origin")
        if origin and not self._same_origin(origin):
            return self._error(HTTPStatus.FORBIDDEN, "cross-origin requests are refused")
        if urlsplit(self.path).path != "/api/verdict":
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            # a plain HTML form on another site cannot send JSON: this refuses cross-site form posts
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("expected an object")
            token = str(body.get("token") or "")
            if token not in self.state.by_token:
                return self._error(HTTPStatus.NOT_FOUND, "no such pair")
            reviewer = clean_reviewer(str(body.get("reviewer") or self.state.default_reviewer or ""))
            side = body.get("verdict")
            if side not in _SIDE_TO_VERDICT:
                raise ValueError("verdict must be a, b, tie, both_bad or null")
            ship_a, ship_b = body.get("ship_a"), body.get("ship_b")
            for s in (ship_a, ship_b):
                if s is not None and not isinstance(s, bool):
                    raise ValueError("ship_a and ship_b must be true, false or null")
            note = body.get("note") or ""
            if not isinstance(note, str):
                raise ValueError("note must be text")
        except (ValueError, UserError) as e:
            return self._error(HTTPStatus.BAD_REQUEST, str(e))
        try:
            with self.state.lock:
                save_verdicts(self.state.store, self.state.session_id, [(token, reviewer, _SIDE_TO_VERDICT[side], ship_a, ship_b, note)], source="web")
                done = sum(1 for v in reviewer_verdicts(self.state.store, self.state.session_id, reviewer) if v.verdict)
        except UserError as e:
            return self._error(HTTPStatus.BAD_REQUEST, e.message)
        return self._json(HTTPStatus.OK, {"saved": True, "done": done, "n": len(self.state.pairs)})


def _answer(verdict: str | None, ship_left: bool | None, ship_right: bool | None, note: str) -> dict[str, Any]:
    return {"verdict": _VERDICT_TO_SIDE.get(verdict), "ship_a": ship_left, "ship_b": ship_right, "note": note}


class ReviewServer:
    """Serve one session. ``start()`` runs it in a background thread; ``serve_forever()`` blocks."""

    def __init__(self, store: Store | str | Path, session_id: str, *, port: int = 8765, reviewer: str | None = None, quiet: bool = True):
        self.store = store if isinstance(store, Store) else Store(store)
        session = get_session(self.store, session_id)
        pairs = blind_pairs(self.store, session)
        if reviewer is not None:
            reviewer = clean_reviewer(reviewer, where="--reviewer")
        state = _State(self.store, session.session_id, pairs, {p.token: p for p in pairs}, reviewer, threading.Lock(), quiet)
        handler = type("ReviewHandler", (_Handler,), {"state": state})
        try:
            self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError as e:
            raise UserError(f"cannot listen on 127.0.0.1:{port} ({e.strerror}); pick another --port (0: any free one)", where="--port") from None
        self.httpd.daemon_threads = True
        self.session_id = session.session_id
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> str:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="evalkit-review", daemon=True)
        self._thread.start()
        return self.url

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
