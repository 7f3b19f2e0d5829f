"""Blinded review sessions: sampling pairs from a run, the A/B key, and reviewers' verdicts.

Everything lives in the store's own tables (``review_*``, part of the store's schema). The key (which model is on the left of each pair) is in
``review_pairs.left_model`` and nowhere else: not in a file, not in a page, not in an export. Pages
and exports address a pair by an opaque random token.

Terms: ``model_a`` / ``model_b`` are the two models the session compares (``--a`` / ``--b``; the win
rate is reported for ``model_a``). ``left`` / ``right`` are the page's sides, shown as "A" and "B";
which model sits on which side is shuffled per pair, balanced and seeded.
"""

from __future__ import annotations

import fnmatch
import json
import random
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

from ..errors import UserError
from ..store import RunItem, RunRecord, Store

Verdict = Literal["left", "right", "tie", "both_bad"]
VERDICTS: tuple[str, ...] = ("left", "right", "tie", "both_bad")

@dataclass(frozen=True)
class ReviewSession:
    session_id: str
    run_id: str
    created: float
    model_a: str
    model_b: str
    n: int
    seed: int
    options: dict[str, Any]


@dataclass(frozen=True)
class ReviewPair:
    """One pair of a session. ``left_model`` ('a' or 'b') is the blinding key: never send it out."""

    session_id: str
    position: int
    token: str
    suite: str
    sample_id: str
    left_model: Literal["a", "b"]
    identical: bool
    stratum: str | None


@dataclass(frozen=True)
class VerdictRecord:
    token: str
    reviewer: str
    verdict: str | None  # left | right | tie | both_bad, in page terms
    ship_left: bool | None
    ship_right: bool | None
    note: str
    source: str  # web | csv
    updated: float


@dataclass(frozen=True)
class BlindPair:
    """What a reviewer may see of a pair: the prompt, the reference and the two outputs. Nothing else."""

    token: str
    position: int
    messages: tuple[tuple[str, str], ...]  # (role, content)
    reference: str | None
    output_left: str
    output_right: str


@dataclass(frozen=True)
class NewSession:
    session: ReviewSession
    differing: int
    identical: int
    skipped_errors: int
    strata: dict[str, int]
    available: int


# --- creating a session -----------------------------------------------------------------------


def _stratum(tags: Sequence[str], patterns: Sequence[str]) -> str | None:
    """The first tag (in the sample's order) that matches a pattern; None when none matches."""
    for tag in tags:
        for pat in patterns:
            if tag == pat or fnmatch.fnmatchcase(tag, pat):
                return tag
    return None


def _allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Split ``n`` draws over strata in proportion to their sizes (largest remainder), capped by size.

    Every non-empty stratum gets at least one draw when ``n`` allows, so a rare tag is not skipped.
    """
    total = sum(sizes.values())
    if total <= n:
        return dict(sizes)
    keys = sorted(sizes)
    quota = {k: n * sizes[k] / total for k in keys}
    alloc = {k: min(int(quota[k]), sizes[k]) for k in keys}
    if n >= len(keys):
        for k in keys:
            alloc[k] = max(alloc[k], 1)
    # ties are broken by name so the split is deterministic
    while sum(alloc.values()) > n:
        k = max((k for k in keys if alloc[k] > 1), key=lambda k: (alloc[k] - quota[k], k))
        alloc[k] -= 1
    while sum(alloc.values()) < n:
        k = max((k for k in keys if alloc[k] < sizes[k]), key=lambda k: (quota[k] - alloc[k], k))
        alloc[k] += 1
    return alloc


def _pick(pool_diff: list[Any], pool_same: list[Any], k: int, rng: random.Random, prefer_different: bool) -> list[Any]:
    if not prefer_different:
        pool = pool_diff + pool_same
        return rng.sample(pool, k)
    take = rng.sample(pool_diff, min(k, len(pool_diff)))
    if len(take) < k:
        take += rng.sample(pool_same, k - len(take))
    return take


def create_session(
    store: Store,
    run: str,
    *,
    model_a: str | None = None,
    model_b: str | None = None,
    n: int = 20,
    seed: int = 0,
    stratify: Sequence[str] = (),
    suites: Sequence[str] = (),
    prefer_different: bool = True,
) -> NewSession:
    """Sample ``n`` items of ``run`` where both models have an output, pair them, shuffle sides, store.

    ``model_a`` defaults to the run's first candidate, ``model_b`` to its baseline. Items whose outputs
    differ are taken first when ``prefer_different`` (identical pairs teach a reviewer nothing). With
    ``stratify`` (tags or glob patterns such as ``topic:*``), ``n`` is split over the matching tags in
    proportion to how many items carry each. Left/right is balanced (half the pairs each way) and,
    like the sampling, fixed by ``seed``.
    """
    if n < 1:
        raise UserError(f"--n must be at least 1 (got {n})", where="--n")
    record = store.get_run(run)
    model_a, model_b = _default_models(record, model_a, model_b)
    items = store.run_items(record.run_id)
    models_in_run = sorted({it.model for it in items})
    for flag, name in (("--a", model_a), ("--b", model_b)):
        if name not in models_in_run:
            raise UserError(f"model '{name}' is not in run {record.run_id} (models: {', '.join(models_in_run) or 'none'})", where=flag)
    if model_a == model_b:
        raise UserError("--a and --b name the same model; a review compares two different models", where="--b")
    suites_in_run = sorted({it.suite for it in items})
    for s in suites:
        if s not in suites_in_run:
            raise UserError(f"suite '{s}' is not in run {record.run_id} (suites: {', '.join(suites_in_run)})", where="--suite")

    by_key: dict[tuple[str, str], dict[str, RunItem]] = defaultdict(dict)
    for it in items:
        if it.model in (model_a, model_b) and (not suites or it.suite in suites):
            by_key[(it.suite, it.sample_id)][it.model] = it
    candidates: list[tuple[str, str, bool, str | None]] = []
    skipped = 0
    for (suite, sid), pair in sorted(by_key.items()):
        a, b = pair.get(model_a), pair.get(model_b)
        if a is None or b is None:
            continue
        if a.output is None or b.output is None or a.error or b.error:
            skipped += 1  # a generation error has nothing to compare, and its marker would unblind
            continue
        stratum = _stratum(list(a.sample.get("tags") or []), stratify) if stratify else None
        candidates.append((suite, sid, a.output.strip() == b.output.strip(), stratum))
    if not candidates:
        raise UserError(
            f"run {record.run_id} has no items where both '{model_a}' and '{model_b}' have an output"
            + (f" ({skipped} skipped for generation errors)" if skipped else ""),
            where="RUN",
        )

    rng = random.Random(f"evalkit-review:{seed}")
    k = min(n, len(candidates))
    strata_sizes: dict[str, int] = defaultdict(int)
    for c in candidates:
        strata_sizes[c[3] or "(other)"] += 1
    alloc = _allocate(dict(strata_sizes), k) if stratify else {"(other)": k}
    chosen: list[tuple[str, str, bool, str | None]] = []
    for stratum in sorted(alloc):
        members = [c for c in candidates if (c[3] or "(other)") == stratum] if stratify else candidates
        diff = [c for c in members if not c[2]]
        same = [c for c in members if c[2]]
        chosen += _pick(diff, same, alloc[stratum], rng, prefer_different)
    rng.shuffle(chosen)  # the page order must say nothing about suite, id or model
    sides = ["a"] * (k // 2) + ["b"] * (k // 2)
    if k % 2:
        sides.append(rng.choice(["a", "b"]))
    rng.shuffle(sides)

    session_id = "rs-" + secrets.token_hex(5)
    options = {"stratify": list(stratify), "suites": list(suites), "prefer_different": prefer_different}
    session = ReviewSession(session_id, record.run_id, time.time(), model_a, model_b, k, seed, options)
    pair_rows = [
        (session_id, i, secrets.token_urlsafe(12), suite, sid, side, int(same), stratum)
        for i, ((suite, sid, same, stratum), side) in enumerate(zip(chosen, sides))
    ]

    def _body() -> None:  # keyed: a retry after a lost connection whose commit did land adds nothing
        store.execute(
            "INSERT INTO review_sessions VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            (session_id, record.run_id, session.created, model_a, model_b, k, seed, json.dumps(options)),
        )
        store.executemany("INSERT INTO review_pairs VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", pair_rows)

    store.write(_body)
    strata_counts: dict[str, int] = defaultdict(int)
    for c in chosen:
        strata_counts[c[3] or "(other)"] += 1
    return NewSession(
        session=session,
        differing=sum(1 for c in chosen if not c[2]),
        identical=sum(1 for c in chosen if c[2]),
        skipped_errors=skipped,
        strata=dict(strata_counts) if stratify else {},
        available=len(candidates),
    )


def _default_models(record: RunRecord, a: str | None, b: str | None) -> tuple[str, str]:
    summary = record.record
    if a is None:
        cands = summary.candidates if summary else []
        if not cands:
            raise UserError(f"run {record.run_id} names no candidate; pass --a MODEL", where="--a")
        a = str(cands[0])
    if b is None:
        base = summary.baseline if summary else None
        if not base:
            raise UserError(f"run {record.run_id} names no baseline; pass --b MODEL", where="--b")
        b = str(base)
    return a, b


# --- reading a session ------------------------------------------------------------------------


def get_session(store: Store, session_id: str) -> ReviewSession:
    """A session by id or unique prefix."""
    rows = list(store.execute(
        "SELECT * FROM review_sessions WHERE substr(session_id, 1, CAST(? AS INTEGER)) = ? ORDER BY created", (len(session_id), session_id)
    ))
    if len(rows) > 1:
        exact = [r for r in rows if r[0] == session_id]
        if not exact:
            raise UserError(f"session id '{session_id}' is ambiguous ({len(rows)} sessions start with it)", where=store.path)
        rows = exact
    if not rows or not session_id:
        raise UserError(f"no review session '{session_id}' in the store (see: evalkit review list)", where=store.path)
    sid, run_id, created, a, b, n, seed, options = rows[0]
    return ReviewSession(sid, run_id, created, a, b, n, seed, json.loads(options))


def list_sessions(store: Store) -> list[ReviewSession]:
    return [
        ReviewSession(sid, run_id, created, a, b, n, seed, json.loads(options))
        for sid, run_id, created, a, b, n, seed, options in store.execute("SELECT * FROM review_sessions ORDER BY created DESC")
    ]


def session_pairs(store: Store, session_id: str) -> list[ReviewPair]:
    return [
        ReviewPair(sid, pos, tok, suite, sample_id, left, bool(same), stratum)
        for sid, pos, tok, suite, sample_id, left, same, stratum in store.execute(
            "SELECT * FROM review_pairs WHERE session_id = ? ORDER BY position", (session_id,)
        )
    ]


def blind_pairs(store: Store, session: ReviewSession) -> list[BlindPair]:
    """The session's pairs as a reviewer sees them, in page order."""
    items = {(it.model, it.suite, it.sample_id): it for it in store.run_items(session.run_id)}
    out: list[BlindPair] = []
    for p in session_pairs(store, session.session_id):
        ia = items.get((session.model_a, p.suite, p.sample_id))
        ib = items.get((session.model_b, p.suite, p.sample_id))
        if ia is None or ib is None:
            raise UserError(f"run {session.run_id} no longer has the items of session {session.session_id}", where=store.path)
        left, right = (ia, ib) if p.left_model == "a" else (ib, ia)
        sample = ia.sample
        messages = tuple((str(m.get("role", "")), str(m.get("content", ""))) for m in sample.get("messages") or [])
        ref = sample.get("reference")
        out.append(BlindPair(p.token, p.position, messages, None if ref is None else str(ref), left.output or "", right.output or ""))
    return out


def reviewer_verdicts(store: Store, session_id: str, reviewer: str | None = None) -> list[VerdictRecord]:
    q = "SELECT token, reviewer, verdict, ship_left, ship_right, note, source, updated FROM review_verdicts WHERE session_id = ?"
    args: list[Any] = [session_id]
    if reviewer is not None:
        q += " AND reviewer = ?"
        args.append(reviewer)
    return [
        VerdictRecord(tok, rev, v, None if sl is None else bool(sl), None if sr is None else bool(sr), note or "", src, upd)
        for tok, rev, v, sl, sr, note, src, upd in store.execute(q + " ORDER BY reviewer, token", args)
    ]


def clean_reviewer(name: str | None, where: str = "reviewer") -> str:
    name = (name or "").strip()
    if not name:
        raise UserError("a reviewer name is needed", where=where)
    if len(name) > 80 or any(ord(ch) < 32 for ch in name):
        raise UserError("a reviewer name is at most 80 printable characters", where=where)
    return name


def save_verdicts(
    store: Store,
    session_id: str,
    rows: Iterable[tuple[str, str, str | None, bool | None, bool | None, str]],
    source: str,
) -> int:
    """Upsert ``(token, reviewer, verdict, ship_left, ship_right, note)`` rows; tokens must be the session's."""
    tokens = {p.token for p in session_pairs(store, session_id)}
    rows = list(rows)
    now = time.time()
    for tok, reviewer, verdict, _, _, note in rows:
        if tok not in tokens:
            raise UserError(f"pair '{tok}' is not part of session {session_id}", where="token")
        if verdict is not None and verdict not in VERDICTS:
            raise UserError(f"verdict must be one of {', '.join(VERDICTS)} (got '{verdict}')", where="verdict")
        if len(note) > 20_000:
            raise UserError("a note is at most 20000 characters", where="note")
        clean_reviewer(reviewer)
    store.write(lambda: store.executemany(
            "INSERT INTO review_verdicts VALUES (?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (session_id, token, reviewer) DO UPDATE SET verdict=excluded.verdict, "
            "ship_left=excluded.ship_left, ship_right=excluded.ship_right, note=excluded.note, "
            "source=excluded.source, updated=excluded.updated",
            [
                (session_id, tok, rev.strip(), v, None if sl is None else int(sl), None if sr is None else int(sr), note, source, now)
                for tok, rev, v, sl, sr, note in rows
            ],
        ))
    return len(rows)


# --- a team: reviewers with private links, each pair assigned to some of them ------------------


@dataclass(frozen=True)
class TeamMember:
    reviewer: str
    created: float
    revoked: float | None
    assigned: int


def _hash_link(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_link(store: Store, session_id: str, reviewer: str) -> str:
    """Mint a reviewer's private link token (random, 192 bits); only its hash is stored."""
    token = secrets.token_urlsafe(24)
    store.execute(
        "INSERT INTO review_reviewers VALUES (?,?,?,?,NULL) ON CONFLICT (session_id, reviewer) DO UPDATE SET "
        "token_hash = excluded.token_hash, created = excluded.created, revoked = NULL",
        (session_id, reviewer, _hash_link(token), time.time()),
    )
    return token


def assign_reviewers(store: Store, session_id: str, reviewers: Sequence[str], overlap: int, seed: int = 0) -> dict[str, str]:
    """Give each pair of the session to ``overlap`` of ``reviewers``, balanced (assignment counts differ
    by at most one) and fixed by ``seed``; returns each reviewer's private link token (shown once).
    """
    names = [clean_reviewer(r, where="--reviewers") for r in reviewers]
    if len(set(names)) != len(names):
        raise UserError("--reviewers names someone twice", where="--reviewers")
    if not names:
        raise UserError("--reviewers needs at least one name", where="--reviewers")
    if not 1 <= overlap <= len(names):
        raise UserError(f"--overlap must be between 1 and the number of reviewers ({len(names)}), got {overlap}", where="--overlap")
    if team(store, session_id):
        raise UserError(f"session {session_id} already has reviewers; `evalkit review revoke --reissue` gives one a new link", where="--reviewers")
    rng = random.Random(f"evalkit-review-assign:{seed}")
    load = {r: 0 for r in names}
    rows: list[tuple[str, str, str]] = []
    for p in session_pairs(store, session_id):
        ties = {r: rng.random() for r in names}
        chosen = sorted(names, key=lambda r: (load[r], ties[r]))[:overlap]
        for r in chosen:
            load[r] += 1
            rows.append((session_id, p.token, r))
    def _body() -> dict[str, str]:
        store.executemany("INSERT INTO review_assignments VALUES (?,?,?) ON CONFLICT DO NOTHING", rows)
        return {r: _new_link(store, session_id, r) for r in names}

    return store.write(_body)


def team(store: Store, session_id: str) -> list[TeamMember]:
    """The session's reviewers with links (empty for a single-user session)."""
    counts = dict(store.execute("SELECT reviewer, COUNT(*) FROM review_assignments WHERE session_id = ? GROUP BY reviewer", (session_id,)))
    return [TeamMember(r, c, rv, int(counts.get(r, 0)))
            for r, c, rv in store.execute("SELECT reviewer, created, revoked FROM review_reviewers WHERE session_id = ? ORDER BY reviewer", (session_id,))]


def reviewer_for_link(store: Store, session_id: str, token: str) -> str | None:
    """The reviewer a private link token belongs to; None when it is unknown or revoked."""
    if not token or len(token) > 200:
        return None
    rows = list(store.execute("SELECT reviewer FROM review_reviewers WHERE session_id = ? AND token_hash = ? AND revoked IS NULL",
                              (session_id, _hash_link(token))))
    return rows[0][0] if rows else None


def assigned_tokens(store: Store, session_id: str, reviewer: str) -> set[str]:
    return {t for (t,) in store.execute("SELECT token FROM review_assignments WHERE session_id = ? AND reviewer = ?", (session_id, reviewer))}


def delete_session(store: Store, session_id: str) -> None:
    """Remove a session and everything of it (a session whose creation could not finish)."""
    def _body() -> None:
        for table in ("review_assignments", "review_reviewers", "review_verdicts", "review_results", "review_pairs", "review_sessions"):
            store.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))

    store.write(_body)


def revoke_reviewer(store: Store, session_id: str, reviewer: str, *, reissue: bool = False) -> str | None:
    """Revoke a reviewer's link at once (their answers stay); with ``reissue``, return a new link token."""
    if reviewer not in {m.reviewer for m in team(store, session_id)}:
        names = ", ".join(m.reviewer for m in team(store, session_id)) or "none: the session has no reviewer links"
        raise UserError(f"'{reviewer}' is not a reviewer of session {session_id} (reviewers: {names})", where="REVIEWER")
    if reissue:
        return store.write(lambda: _new_link(store, session_id, reviewer))
    store.write(lambda: store.execute("UPDATE review_reviewers SET revoked = ? WHERE session_id = ? AND reviewer = ?", (time.time(), session_id, reviewer)))
    return None
