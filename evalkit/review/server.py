"""The review page's web server: a Starlette app on uvicorn.

Two modes, one page:

* **single user** (a session made without ``--reviewers``): bound to 127.0.0.1, loopback ``Host``
  names only (no DNS rebinding), the reviewer's name from ``--reviewer`` or the page.
* **team** (a session made with ``--reviewers a,b,c``): each reviewer opens their private link
  ``/r/<token>``; the page sends the token in the ``X-Review-Token`` header on every API call. A
  request without a valid (known, unrevoked) token gets 401 on every API route and sees nothing. A
  reviewer sees only the pairs assigned to them and only their own answers; the reviewer's name
  comes from the token, never from the request body. It may listen beyond loopback (``--host 0.0.0.0``).

Routes:
  GET  /  or  /r/<token>       the page (static; the same bytes for every session and reviewer)
  GET  /app.js, /app.css       its script and style (static)
  GET  /api/session            {n, tokens, reviewer, answers}: the pairs' opaque tokens in page order
                               and this reviewer's answers so far (?reviewer= in single-user mode)
  GET  /api/pair/<token>       {token, index, messages, reference, output_a, output_b}
  POST /api/verdict            {token, reviewer, verdict: a|b|tie|both_bad|null, ship_a, ship_b, note}

Blinding: responses carry no model name, path, id, run id, suite or sample id, and nothing that
differs between the sides except the outputs. "a"/"b" in the API are the page's sides (left/right),
translated to models only in the store, only by ``unblind``. A strict Content-Security-Policy keeps
even a mis-escaped model output from running script; the page itself inserts text with textContent.
POSTs must be JSON (a cross-site form cannot send it) and, when the browser names an Origin, come
from exactly this server's origin (scheme, host and port); in team mode the token header is the CSRF
token as well. Access logs are off: a link's token is in its path.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._util.text import terminal_safe
from ..errors import UserError, missing_extra
from ..store import Store, StoreUnavailable
from .sessions import (
    BlindPair,
    assigned_tokens,
    blind_pairs,
    clean_reviewer,
    get_session,
    reviewer_for_link,
    reviewer_verdicts,
    save_verdicts,
    team,
)

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a link's token must not leave in a Referer
    "Content-Security-Policy": _CSP,
}
_SIDE_TO_VERDICT = {"a": "left", "b": "right", "tie": "tie", "both_bad": "both_bad", None: None}
_VERDICT_TO_SIDE = {v: k for k, v in _SIDE_TO_VERDICT.items()}
_MAX_BODY = 64 * 1024
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_HEADER = "x-review-token"


def _static(name: str) -> bytes:
    return resources.files("evalkit.review").joinpath("static", name).read_bytes()


def _answer(verdict: str | None, ship_left: bool | None, ship_right: bool | None, note: str) -> dict[str, Any]:
    return {"verdict": _VERDICT_TO_SIDE.get(verdict), "ship_a": ship_left, "ship_b": ship_right, "note": note}


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


@dataclass
class _State:
    store: Store
    session_id: str
    pairs: list[BlindPair]
    by_token: dict[str, BlindPair]
    default_reviewer: str | None
    team: bool
    public_origin: str | None
    lock: threading.Lock


_MAX_DEPTH = 4  # the verdict is one flat object: anything nested deeper is refused before parsing


def _json_depth(raw: bytes) -> int:
    """The deepest nesting of ``[`` / ``{`` in a JSON text (strings skipped), without parsing it: a
    60 KB ``[[[[...`` body must not reach the recursive parser.
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _parse_verdict(raw: bytes) -> tuple[str, str | None, bool | None, bool | None, str, str]:
    """(pair token, verdict side, ship_a, ship_b, note, reviewer from the body) or ValueError."""
    if _json_depth(raw) > _MAX_DEPTH:
        raise ValueError("the body is nested too deeply (a verdict is one flat JSON object)")
    try:
        body = json.loads(raw or b"{}")
    except (UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"not JSON text: {type(e).__name__}") from None
    if not isinstance(body, dict):
        raise ValueError("expected an object")
    side = body.get("verdict")
    if not (side is None or isinstance(side, str)) or side not in _SIDE_TO_VERDICT:
        raise ValueError("verdict must be a, b, tie, both_bad or null")
    ship_a, ship_b = body.get("ship_a"), body.get("ship_b")
    for s in (ship_a, ship_b):
        if s is not None and not isinstance(s, bool):
            raise ValueError("ship_a and ship_b must be true, false or null")
    note = body.get("note") or ""
    if not isinstance(note, str):
        raise ValueError("note must be text")
    token, reviewer = body.get("token") or "", body.get("reviewer") or ""
    if not isinstance(token, str) or not isinstance(reviewer, str):
        raise ValueError("token and reviewer must be text")
    return token, side, ship_a, ship_b, note, reviewer


def build_app(state: _State) -> Any:
    """The ASGI app for one session."""
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route
    except ImportError as e:
        raise missing_extra("evalkit review serve", "serve", e) from None

    def send(status: int, body: bytes, ctype: str) -> Response:
        return Response(body, status_code=status, media_type=ctype, headers=_HEADERS)

    def as_json(status: int, obj: Any) -> Response:
        return JSONResponse(obj, status_code=status, headers=_HEADERS)

    def locked(fn, *args):
        def call():
            with state.lock:
                return fn(*args)

        return run_in_threadpool(call)

    def host_of(request: Request) -> str:
        return request.headers.get("host") or ""

    def check_host(request: Request) -> None:
        # single user: a page on another site could point a DNS name at 127.0.0.1 (DNS rebinding)
        if not state.team:
            host = host_of(request).rsplit(":", 1)[0].strip("[]").lower()
            if host not in _LOOPBACK:
                raise _Refused(403, "this server answers on 127.0.0.1 only")

    def same_origin(request: Request, origin: str) -> bool:
        """Exactly this server's origin: scheme, host and port (another port is another origin)."""
        try:
            o = urlsplit(origin)
            port = o.port or (443 if o.scheme == "https" else 80)
        except ValueError:
            return False
        if state.public_origin is not None and origin.rstrip("/").lower() == state.public_origin:
            return True
        if state.team:
            host = host_of(request)
            return o.scheme == "http" and bool(host) and f"{o.hostname}:{port}".lower() == (host if ":" in host else f"{host}:80").lower()
        return o.scheme == "http" and o.hostname in _LOOPBACK and port == (request.scope.get("server") or ("", 0))[1]  # the bound port

    async def reviewer_of(request: Request, *, path_token: str | None = None) -> str | None:
        """Team mode: the reviewer the link token belongs to (401 otherwise). Single user: the name asked for."""
        if state.team:
            token = path_token if path_token is not None else request.headers.get(TOKEN_HEADER, "")
            who = await locked(reviewer_for_link, state.store, state.session_id, token)
            if who is None:
                raise _Refused(401, "a valid reviewer link is needed (it may have been revoked: ask your lead for a new one)")
            return who
        return (request.query_params.get("reviewer") or "").strip() or state.default_reviewer

    async def visible(reviewer: str | None) -> list[BlindPair]:
        if not state.team:
            return state.pairs
        mine = await locked(assigned_tokens, state.store, state.session_id, reviewer)
        return [p for p in state.pairs if p.token in mine]

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            try:
                check_host(request)
                return await handler(request)
            except _Refused as e:
                return as_json(e.status, {"error": e.message})
            except StoreUnavailable as e:  # the store, past its reconnect bound: the client did nothing wrong
                print(f"review server: {terminal_safe(e.one_line(), one_line=True)}", file=sys.stderr, flush=True)
                return as_json(503, {"error": "the store is unavailable; try again in a moment"})

        return endpoint

    async def page(request: Request) -> Response:
        if state.team:
            token = request.path_params.get("link")
            if token is None:
                raise _Refused(401, "open your own reviewer link (http://HOST:PORT/r/...)")
            await reviewer_of(request, path_token=token)
        elif "link" in request.path_params:
            raise _Refused(404, "not found")
        return send(200, _static("index.html"), "text/html; charset=utf-8")

    async def script(request: Request) -> Response:
        return send(200, _static("app.js"), "text/javascript; charset=utf-8")

    async def style(request: Request) -> Response:
        return send(200, _static("app.css"), "text/css; charset=utf-8")

    async def favicon(request: Request) -> Response:
        return send(204, b"", "image/x-icon")

    async def session(request: Request) -> Response:
        reviewer = await reviewer_of(request)
        pairs = await visible(reviewer)
        answers: dict[str, Any] = {}
        if reviewer:
            recs = await locked(reviewer_verdicts, state.store, state.session_id, reviewer)
            shown = {p.token for p in pairs}
            answers = {v.token: _answer(v.verdict, v.ship_left, v.ship_right, v.note) for v in recs if v.token in shown}
        return as_json(200, {"n": len(pairs), "tokens": [p.token for p in pairs], "reviewer": reviewer, "answers": answers})

    async def pair(request: Request) -> Response:
        reviewer = await reviewer_of(request)
        token = request.path_params["token"]
        p = state.by_token.get(token)
        if p is None or (state.team and token not in await locked(assigned_tokens, state.store, state.session_id, reviewer)):
            raise _Refused(404, "no such pair")
        return as_json(200, {
            "token": p.token,
            "index": p.position,
            "messages": [{"role": r, "content": c} for r, c in p.messages],
            "reference": p.reference,
            "output_a": p.output_left,
            "output_b": p.output_right,
        })

    async def verdict(request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin and not same_origin(request, origin):
            raise _Refused(403, "cross-origin requests are refused")
        reviewer = await reviewer_of(request)
        if not (request.headers.get("content-type") or "").startswith("application/json"):
            # a plain HTML form on another site cannot send JSON: this refuses cross-site form posts
            raise _Refused(415, "send application/json")
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY:
            raise _Refused(413, "body too large")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # a chunked body has no length: refuse it as soon as it passes the limit
            size += len(chunk)
            if size > _MAX_BODY:
                raise _Refused(413, "body too large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            token, side, ship_a, ship_b, note, named = _parse_verdict(raw)
            if token not in state.by_token:
                raise _Refused(404, "no such pair")
            if state.team:
                if token not in await locked(assigned_tokens, state.store, state.session_id, reviewer):
                    raise _Refused(404, "no such pair")
                who = str(reviewer)  # from the link, whatever the body says
            else:
                who = clean_reviewer(named or state.default_reviewer or "")
        except (ValueError, UserError) as e:
            raise _Refused(400, getattr(e, "message", None) or str(e)) from None

        def save() -> int:
            save_verdicts(state.store, state.session_id, [(token, who, _SIDE_TO_VERDICT[side], ship_a, ship_b, note)], source="web")
            return sum(1 for v in reviewer_verdicts(state.store, state.session_id, who) if v.verdict)

        try:
            done = await locked(save)
        except StoreUnavailable:
            raise
        except UserError as e:
            raise _Refused(400, e.message) from None
        n = len(await visible(who))
        return as_json(200, {"saved": True, "done": done, "n": n})

    async def not_found(request: Request) -> Response:
        return as_json(404, {"error": "not found"})

    routes = [
        Route("/", guarded(page), methods=["GET", "HEAD"]),
        Route("/index.html", guarded(page), methods=["GET", "HEAD"]),
        Route("/r/{link}", guarded(page), methods=["GET", "HEAD"]),
        Route("/app.js", guarded(script), methods=["GET", "HEAD"]),
        Route("/app.css", guarded(style), methods=["GET", "HEAD"]),
        Route("/favicon.ico", guarded(favicon), methods=["GET", "HEAD"]),
        Route("/api/session", guarded(session), methods=["GET", "HEAD"]),
        Route("/api/pair/{token}", guarded(pair), methods=["GET", "HEAD"]),
        Route("/api/verdict", guarded(verdict), methods=["POST"]),
    ]
    app = Starlette(routes=routes)

    async def on_404(request: Request, exc: Exception) -> Response:
        # unknown paths (and unknown methods) answer the same everywhere: no route list, no framework page
        try:
            check_host(request)
        except _Refused as e:
            return as_json(e.status, {"error": e.message})
        return as_json(404 if getattr(exc, "status_code", 404) == 404 else 405, {"error": "not found"})

    app.add_exception_handler(404, on_404)
    app.add_exception_handler(405, on_404)
    return app


class ReviewServer:
    """Serve one session. ``start()`` runs it in a background thread; ``serve_forever()`` blocks."""

    def __init__(self, store: Store | str | Path, session_id: str, *, host: str = "127.0.0.1", port: int = 8765,
                 reviewer: str | None = None, quiet: bool = True, public_url: str | None = None):
        try:
            import uvicorn
        except ImportError as e:
            raise missing_extra("evalkit review serve", "serve", e) from None
        self.store = store if isinstance(store, Store) else Store(store)
        session = get_session(self.store, session_id)
        pairs = blind_pairs(self.store, session)
        members = team(self.store, session.session_id)
        if reviewer is not None:
            if members:
                raise UserError("this session has reviewer links: each reviewer opens their own (no --reviewer)", where="--reviewer")
            reviewer = clean_reviewer(reviewer, where="--reviewer")
        if host not in _LOOPBACK and not members:
            raise UserError(f"--host {host} serves beyond this machine: that needs reviewer links (evalkit review new RUN --reviewers "
                            "alice,bob --overlap 2); this session has none", where="--host")
        origin = None
        if public_url:
            u = urlsplit(public_url)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise UserError("not a URL: expected http(s)://HOST[:PORT]", where="--public-url")
            origin = f"{u.scheme}://{u.netloc}".lower()
        state = _State(self.store, session.session_id, pairs, {p.token: p for p in pairs}, reviewer, bool(members), origin, threading.Lock())
        self.session_id = session.session_id
        self.team = bool(members)
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as e:
            self._sock.close()
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port (0: any free one)", where="--port") from None
        self._sock.listen(128)
        config = uvicorn.Config(build_app(state), log_level="warning" if quiet else "info", access_log=False,
                                server_header=False, date_header=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def link(self, token: str, base: str | None = None) -> str:
        return f"{(base or self.url).rstrip('/')}/r/{token}"

    def start(self) -> str:
        self._thread = threading.Thread(target=self._run, name="evalkit-review", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            time.sleep(0.01)
        return self.url

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def serve_forever(self) -> None:
        """Serve until Ctrl-C (uvicorn's own signal handling stops it gracefully)."""
        self._server.run(sockets=[self._sock])

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.close()

    def close(self) -> None:
        self._sock.close()
