"""``evalkit review``: blinded side-by-side spot-checks of a run's outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional
from urllib.parse import urlsplit

import typer

from .._util.fs import out_file_option
from .._util.text import terminal_safe
from ..errors import UserError
from ._options import STORE_HELP

if TYPE_CHECKING:
    from ..store import Store

review_app = typer.Typer(
    name="review",
    help=(
        "Blinded side-by-side review of two models' outputs from a run, in a local web page.\n\n"
        "\b\n"
        "  evalkit review new latest --n 20 --seed 1     # prints the session id last\n"
        "  evalkit review serve rs-1a2b3c4d5e --reviewer alice\n"
        "  evalkit review unblind rs-1a2b3c4d5e\n\n"
        "The A/B key stays in the store: the page and CSV exports show only the prompt, the reference "
        "and the two outputs."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)



def _open_store(path: Optional[str]) -> "Store":
    from ..store import open_existing_store

    return open_existing_store(path)


@review_app.command("new")
def new_cmd(
    run: str = typer.Argument(..., help="Run id, a unique prefix of one, 'latest', or the run's output folder (its summary.json names the run and its store)."),
    a: Optional[str] = typer.Option(None, "--a", help="Model whose win rate is reported (default: the run's first candidate)."),
    b: Optional[str] = typer.Option(None, "--b", help="Model it is compared with (default: the run's baseline)."),
    n: int = typer.Option(20, "--n", help="Number of pairs to review."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and for the left/right shuffle."),
    stratify: Optional[list[str]] = typer.Option(
        None, "--stratify", help="Split --n over these tags (repeatable; glob patterns such as 'topic:*' allowed)."
    ),
    suite: Optional[list[str]] = typer.Option(None, "--suite", help="Only items of this suite (repeatable)."),
    prefer_different: bool = typer.Option(
        True, "--prefer-different/--any", help="Take items whose two outputs differ first (default), or sample from all."
    ),
    for_calibration: bool = typer.Option(
        False, "--for-calibration", help="A uniform random (with --stratify: stratified) sample, identical outputs included: labels that "
        "`evalkit calibrate --session` can use (calibration needs labelled items drawn at random, not the interesting ones)."
    ),
    reviewers: Optional[str] = typer.Option(
        None, "--reviewers", help="A team session: these reviewers (comma-separated) each get a private link and their share of the pairs."
    ),
    overlap: int = typer.Option(2, "--overlap", help="With --reviewers: how many reviewers see each pair (2 or more measures agreement)."),
    url: Optional[str] = typer.Option(
        None, "--url", help="With --reviewers: the address reviewers reach `review serve` at, for their links (default http://THIS_HOST:8765)."
    ),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Start a blinded session: sample N items of RUN and pair the two models' outputs.

    Sides are shuffled per pair (half each way, fixed by --seed); the key is kept in the store only.
    With --reviewers, each pair goes to --overlap of them (balanced, fixed by --seed) and each
    reviewer gets a private link, printed here once (only its hash is stored; `review revoke`
    ends one, `review revoke --reissue` makes a new one). The session id is printed as the last line.

    \b
    Example:
      evalkit review new latest --a cand --b base --n 20 --seed 7 --stratify 'topic:*'
      evalkit review new reports/run1 --n 20     # a run's output folder: no need to know its store
      evalkit review new latest --n 30 --reviewers alice,bob,carol --overlap 2 --url http://review-box:8765
      evalkit review new latest --n 40 --for-calibration   # then: evalkit calibrate latest --scorer pairwise --session ID
    """
    import shlex

    from ..review import create_session
    from ..review.sessions import assign_reviewers, delete_session
    from ..store import locate_run, store_display

    if for_calibration:
        prefer_different = False  # items whose outputs differ first would bias the calibrated estimate
    where, run = locate_run(run, store)
    store = str(where) if where is not None else None
    names = [r.strip() for r in (reviewers or "").split(",") if r.strip()] if reviewers is not None else None
    base_url = _link_base(url) if names is not None else None
    links: dict[str, str] = {}
    with _open_store(store) as st:
        made = create_session(
            st, run, model_a=a, model_b=b, n=n, seed=seed, stratify=stratify or (), suites=suite or (), prefer_different=prefer_different
        )
        if names is not None:
            try:
                links = assign_reviewers(st, made.session.session_id, names, overlap, seed)
            except UserError:
                delete_session(st, made.session.session_id)  # nothing half made
                raise
    s = made.session
    typer.echo(f"Review session of {s.n} pairs from run {s.run_id}: {s.model_a} vs {s.model_b}, sides shuffled per pair.")
    typer.echo(f"  {made.differing} pairs with differing outputs, {made.identical} identical; {made.available} items were eligible.")
    if made.skipped_errors:
        typer.echo(f"  {made.skipped_errors} items skipped: a generation error on one side.")
    if made.strata:
        typer.echo("  per stratum: " + ", ".join(f"{k}: {v}" for k, v in sorted(made.strata.items())))
    if s.n < n:
        typer.echo(f"  only {s.n} eligible items, fewer than --n {n}.")
    at = f" --store {shlex.quote(store_display(store))}" if store is not None else ""
    if links:
        typer.echo(f"  {len(links)} reviewers, each pair seen by {overlap}; private links (shown once; keep them private):")
        for name, token in links.items():
            typer.echo(f"    {terminal_safe(name):<20} {base_url}/r/{token}")
        port = urlsplit(base_url or "").port or 80
        typer.echo(f"  next: evalkit review serve {s.session_id} --host 0.0.0.0 --port {port}{at}")
    else:
        typer.echo(f"  next: evalkit review serve {s.session_id} --reviewer YOUR_NAME{at}")
    typer.echo(s.session_id)


def _link_base(url: str | None) -> str:
    if url is None:
        import socket

        return f"http://{socket.gethostname()}:8765"
    u = urlsplit(url)
    try:
        u.port  # noqa: B018 - raises on a bad port
    except ValueError:
        u = u._replace(scheme="")
    if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment:
        raise UserError("not a URL reviewers can open: expected http(s)://HOST[:PORT]", where="--url")
    return url.rstrip("/")


@review_app.command("serve")
def serve_cmd(
    session: str = typer.Argument(..., help="Session id (or a unique prefix)."),
    port: int = typer.Option(8765, "--port", help="Port to listen on (0: any free port)."),
    host: str = typer.Option(
        "127.0.0.1", "--host",
        help="Address to listen on. 127.0.0.1 (default): this machine only. 0.0.0.0: the team's machines too (needs a session made with --reviewers).",
    ),
    public_url: Optional[str] = typer.Option(
        None, "--public-url", help="The origin reviewers' browsers use when it differs from HOST:PORT (a TLS proxy: https://review.example)."
    ),
    reviewer: Optional[str] = typer.Option(None, "--reviewer", help="Single-user sessions: your name; without it the page asks for one."),
    open_browser: bool = typer.Option(False, "--open/--no-open", help="Open the page in the default browser."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Serve the review page for SESSION until Ctrl-C.

    One pair at a time: keys 1-4 give the verdict (A better, B better, tie, both bad) and move on to
    the next unanswered pair, a / b flip "would ship" for a side (before the verdict), j / k move,
    r shows the reference, n opens the note. Every answer is saved as it is given; reopening the page
    resumes.

    A team session (made with --reviewers) serves every reviewer at once: each opens their private
    link, sees only their own pairs and answers; a request without a valid link gets 401. A
    single-user session stays on 127.0.0.1 (several names work: http://127.0.0.1:8765/?reviewer=bob).

    \b
    Example:
      evalkit review serve rs-1a2b3c4d5e --reviewer alice --open
      evalkit review serve rs-1a2b3c4d5e --host 0.0.0.0 --port 8765     # a team session
    """
    from ..review import ReviewServer

    st = _open_store(store)
    try:
        server = ReviewServer(st, session, host=host, port=port, reviewer=reviewer, quiet=True, public_url=public_url)
    except BaseException:
        st.close()
        raise
    if server.team:
        typer.echo(f"Serving team session {server.session_id} on {host}:{server.port}: each reviewer opens their private link "
                   "(Ctrl-C to stop; answers are already saved)")
    else:
        typer.echo(f"Reviewing session {server.session_id}: open {server.url}  (Ctrl-C to stop; answers are already saved)")
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        server.close()
        st.close()


@review_app.command("unblind")
def unblind_cmd(
    session: str = typer.Argument(..., help="Session id (or a unique prefix)."),
    max_unshippable: float = typer.Option(2, "--max-unshippable", help="'Would not ship' outputs allowed per --per items."),
    per: int = typer.Option(20, "--per", help="The item count --max-unshippable refers to (scaled to the items reviewed)."),
    json_out: Optional[Path] = typer.Option(None, "--json", callback=out_file_option, help="Also write the full result (per-item verdicts included) here."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Reveal the key: win rate with CI, 'would not ship' counts against the threshold, agreement
    between reviewers, and Cohen's kappa between humans and the pairwise judge (when the run has one).

    The result is stored for reports and for gates such as
    {name: spot-check, metric: human_unshippable, model: cand, max: 2}.

    \b
    Example:
      evalkit review unblind rs-1a2b3c4d5e --max-unshippable 2 --per 20
    """
    from ..review import render_markdown, unblind

    with _open_store(store) as st:
        result = unblind(st, session, max_unshippable=max_unshippable, per=per)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    typer.echo(render_markdown(result))


@review_app.command("export")
def export_cmd(
    session: str = typer.Argument(..., help="Session id (or a unique prefix)."),
    out: Path = typer.Option(..., "--out", "-o", callback=out_file_option, help="CSV file to write."),
    reviewer: Optional[str] = typer.Option(None, "--reviewer", help="Fill in this reviewer's answers so far."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Write the session as a CSV for a spreadsheet, still blinded (token, prompt, reference,
    output_a, output_b, and empty verdict / a_would_ship / b_would_ship / note / reviewer columns).

    Fill verdict with A, B, tie or both bad; the ship columns with yes or no. Then import it.

    \b
    Example:
      evalkit review export rs-1a2b3c4d5e --out review.csv --reviewer carol
    """
    from ..review import export_csv

    with _open_store(store) as st:
        rows = export_csv(st, session, out, reviewer=reviewer)
    typer.echo(f"wrote {rows} pairs to {out}")


@review_app.command("import")
def import_cmd(
    session: str = typer.Argument(..., help="Session id (or a unique prefix)."),
    file: Path = typer.Argument(..., help="CSV made by `evalkit review export` and filled in."),
    reviewer: Optional[str] = typer.Option(None, "--reviewer", help="Reviewer for rows whose 'reviewer' column is empty."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Read verdicts from a filled-in CSV (rows are checked first; an error names file:line).

    \b
    Example:
      evalkit review import rs-1a2b3c4d5e review.csv --reviewer carol
    """
    from ..review import import_csv

    with _open_store(store) as st:
        saved = import_csv(st, session, file, reviewer=reviewer)
    typer.echo(f"saved {saved} answers from {file}")


@review_app.command("list")
def list_cmd(store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP)) -> None:
    """List review sessions, newest first, with progress per reviewer.

    \b
    Example:
      evalkit review list
    """
    import time as _time

    from ..review import list_sessions, reviewer_verdicts, stored_results

    with _open_store(store) as st:
        sessions = list_sessions(st)
        unblinded = {r["session_id"] for r in stored_results(st)}
        if not sessions:
            typer.echo("no review sessions (start one with: evalkit review new RUN)")
        for s in sessions:
            done: dict[str, int] = {}
            for v in reviewer_verdicts(st, s.session_id):
                if v.verdict:
                    done[v.reviewer] = done.get(v.reviewer, 0) + 1
            progress = ", ".join(f"{r} {k}/{s.n}" for r, k in sorted(done.items())) or f"0/{s.n}"
            when = _time.strftime("%Y-%m-%d %H:%M", _time.localtime(s.created))
            flag = " (unblinded)" if s.session_id in unblinded else ""
            typer.echo(f"{s.session_id}  {when}  run {s.run_id}  {s.n} pairs  {progress}{flag}")


@review_app.command("adjudicate")
def adjudicate_cmd(
    session: str = typer.Argument(..., help="The review session id."),
    item: str = typer.Argument(..., help="The pair's SAMPLE_ID (or SUITE/SAMPLE_ID), as `review unblind` lists the split pairs."),
    verdict: str = typer.Argument(..., help="In model terms: a_better | b_better | tie | both_bad (a = the session's first model)."),
    by: str = typer.Option(..., "--by", help="Who decides (the lead's name)."),
    note: str = typer.Option("", "--note", help="Why (kept with the verdict)."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Decide a pair the reviewers split on. The lead's verdict decides that pair in `review unblind`
    (and the gates that read it); the reviewers' own answers still count for agreement.

    \b
    Example:
      evalkit review adjudicate rs-9f2130ee77 s014 a_better --by dana --note "B drops the age"
    """
    from ..review.unblind import adjudicate

    with _open_store(store) as st:
        p = adjudicate(st, session, item, verdict, by=by, note=note)
    typer.echo(f"recorded: {p.suite}/{p.sample_id} -> {verdict} (by {by}); rerun `evalkit review unblind {session}` to use it")


@review_app.command("status")
def status_cmd(
    session: str = typer.Argument(..., help="The review session id (evalkit review list)."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Per reviewer: pairs answered, left, notes written, last answer; and the pairs nobody answered yet.

    \b
    Example:
      evalkit review status rs-9f2130ee77
    """
    import time as _time

    from ..review import get_session, reviewer_verdicts, session_pairs
    from ..review.sessions import team
    from ..review.unblind import ADJUDICATION

    with _open_store(store) as st:
        s = get_session(st, session)
        pairs = session_pairs(st, s.session_id)
        verdicts = reviewer_verdicts(st, s.session_id)
        members = {m.reviewer: m for m in team(st, s.session_id)}
    per: dict[str, dict[str, float]] = {name: {"answered": 0, "notes": 0, "last": 0.0} for name in members}
    answered: set[str] = set()
    adjudicated = 0
    for v in verdicts:
        if v.source == ADJUDICATION:
            adjudicated += 1
            continue
        row = per.setdefault(v.reviewer, {"answered": 0, "notes": 0, "last": 0.0})
        if v.verdict:
            row["answered"] += 1
            answered.add(v.token)
        row["notes"] += 1 if v.note.strip() else 0
        row["last"] = max(row["last"], v.updated or 0.0)
    typer.echo(f"{s.session_id}: {len(pairs)} pairs, run {s.run_id}; {len(answered)} answered by someone, {len(pairs) - len(answered)} by nobody yet"
               + (f"; {adjudicated} adjudicated by a lead" if adjudicated else ""))
    if not per:
        typer.echo("no answers yet")
        return
    typer.echo(f"{'reviewer':<20} {'answered':>9} {'left':>5} {'notes':>6}  last answer")
    for name, row in sorted(per.items()):
        when = _time.strftime("%Y-%m-%d %H:%M", _time.localtime(row["last"])) if row["last"] else "-"
        m = members.get(name)
        total = m.assigned if m is not None else len(pairs)  # a team member's share, or the whole session
        link = "" if m is None else ("  (link revoked)" if m.revoked else "")
        line = f"{name:<20} {int(row['answered']):>5}/{total:<3} {max(total - int(row['answered']), 0):>5} {int(row['notes']):>6}  {when}{link}"
        typer.echo(terminal_safe(line))


@review_app.command("revoke")
def revoke_cmd(
    session: str = typer.Argument(..., help="The review session id (evalkit review list)."),
    reviewer: str = typer.Argument(..., help="The reviewer whose private link stops working."),
    reissue: bool = typer.Option(False, "--reissue", help="Give the reviewer a new link at once (the old one stops working)."),
    url: Optional[str] = typer.Option(None, "--url", help="With --reissue: the address reviewers reach `review serve` at (default http://THIS_HOST:8765)."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Revoke a reviewer's private link: from the next request on, it gets 401 (a running server too).

    Their answers so far stay. With --reissue the reviewer gets a new link, printed once.

    \b
    Example:
      evalkit review revoke rs-9f2130ee77 bob
      evalkit review revoke rs-9f2130ee77 bob --reissue --url http://review-box:8765
    """
    from ..review import get_session
    from ..review.sessions import revoke_reviewer

    base = _link_base(url) if reissue else None
    with _open_store(store) as st:
        s = get_session(st, session)
        token = revoke_reviewer(st, s.session_id, reviewer, reissue=reissue)
    if token is None:
        typer.echo(terminal_safe(f"revoked: {reviewer}'s link to session {s.session_id} no longer works"))
    else:
        typer.echo(terminal_safe(f"new link for {reviewer} (the old one no longer works): {base}/r/{token}"))


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
