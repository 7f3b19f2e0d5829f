"""Unblinding: turn page-side verdicts into model verdicts, then win rate, "would not ship" counts,
agreement between reviewers, and agreement between humans and the pairwise judge.

Aggregation rules (documented in README.md, *Blinded review*):
- Several reviewers on one pair: the item's verdict is the majority verdict; no unique majority is a tie.
- An output is "would not ship" when at least half of the reviewers who answered for it said so.
- Win rate: wins / (wins + losses) of model A over model B (ties and "both bad" are not decisive),
  with a Wilson 95% interval and a two-sided sign test; ``rate_ties_half`` counts ties as half a win.
- The "would not ship" threshold is a rate: ``max`` per ``per`` items (default 2 per 20), scaled to the
  number of items reviewed; a model fails when its count is above ``max * reviewed / per``.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import combinations
from typing import Any, Hashable, Mapping, Sequence

from ..errors import UserError
from ..gates.metrics.human_unshippable import human_unshippable_gate, stored_results, unshippable_details  # noqa: F401 - re-exported
from ..stats import krippendorff_alpha_nominal
from ..store import Store
from ..types import Score
from .sessions import ReviewPair, ReviewSession, get_session, reviewer_verdicts, session_pairs

# Verdicts in model terms: which of the session's two models is better.
MODEL_VERDICTS: tuple[str, ...] = ("a_better", "b_better", "tie", "both_bad")
PREFERENCE: tuple[str, ...] = ("a_better", "b_better", "tie")  # "both bad" is a tie for a preference


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters over the same items: (p_o - p_e) / (1 - p_e).

    None when it is undefined: no items, or both raters used one and the same category throughout
    (p_e = 1).
    """
    if len(first) != len(second):
        raise ValueError("both raters must rate the same items")
    n = len(first)
    if n == 0:
        return None
    p_o = sum(1 for x, y in zip(first, second) if x == y) / n
    c1, c2 = Counter(first), Counter(second)
    p_e = sum(c1[k] * c2[k] for k in set(c1) | set(c2)) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def to_model_verdict(verdict: str, left_model: str) -> str:
    """A page verdict (left/right/tie/both_bad) in model terms (a_better/b_better/tie/both_bad)."""
    if verdict in ("tie", "both_bad"):
        return verdict
    left_wins = verdict == "left"
    a_is_left = left_model == "a"
    return "a_better" if left_wins == a_is_left else "b_better"


ADJUDICATION = "adjudication"  # the source of a lead's verdict on a pair the reviewers split on
ADJUDICATOR_PREFIX = "adjudicator:"  # the reviewer key it is stored under


def to_page_verdict(model_verdict: str, left_model: str) -> str:
    """A model verdict (a_better/b_better/tie/both_bad) in page terms (left/right/tie/both_bad)."""
    if model_verdict in ("tie", "both_bad"):
        return model_verdict
    return "left" if (model_verdict == "a_better") == (left_model == "a") else "right"


def adjudicate(store: Store, session_id: str, item: str, verdict: str, *, by: str, note: str = "") -> ReviewPair:
    """Record a lead's verdict (model terms) on one pair: it decides the pair in ``unblind``, and is
    kept apart from the reviewers' answers (agreement statistics use theirs only).
    """
    from .sessions import clean_reviewer, save_verdicts

    if verdict not in MODEL_VERDICTS:
        raise UserError(f"verdict must be one of {', '.join(MODEL_VERDICTS)} (got '{verdict}')", where="VERDICT")
    session = get_session(store, session_id)
    pairs = session_pairs(store, session.session_id)
    match = [p for p in pairs if item in (p.sample_id, f"{p.suite}/{p.sample_id}")]
    if len(match) != 1:
        raise UserError(f"'{item}' names {len(match)} pairs of session {session.session_id}: give SAMPLE_ID or SUITE/SAMPLE_ID of one", where="ITEM")
    p = match[0]
    # kept under its own key, so a lead who also reviewed keeps their own answer beside the decision
    lead = ADJUDICATOR_PREFIX + clean_reviewer(by, "--by")
    save_verdicts(store, session.session_id, [(p.token, lead, to_page_verdict(verdict, p.left_model), None, None, note)], source=ADJUDICATION)
    return p


def majority(votes: Sequence[str]) -> str:
    counts = Counter(votes).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "tie"
    return counts[0][0]


def win_rate(wins: int, losses: int, ties: int, confidence: float = 0.95) -> dict[str, Any]:
    from scipy.stats import binomtest

    decisive = wins + losses
    out: dict[str, Any] = {
        "wins": wins, "losses": losses, "ties": ties, "decisive": decisive, "confidence": confidence,
        "rate": None, "ci_low": None, "ci_high": None, "p_value": None,
        "rate_ties_half": (wins + 0.5 * ties) / (decisive + ties) if decisive + ties else None,
    }
    if decisive:
        test = binomtest(wins, decisive, 0.5, alternative="two-sided")
        ci = test.proportion_ci(confidence_level=confidence, method="wilson")
        out.update(rate=wins / decisive, ci_low=float(ci.low), ci_high=float(ci.high), p_value=float(test.pvalue))
    return out


@dataclass(frozen=True)
class JudgeVerdict:
    scorer: str
    verdict: str  # a_better | b_better | tie


def judge_verdict(scores: Mapping[str, Score], *, this_is: str, other_name: str, baseline: str | None) -> list[JudgeVerdict]:
    """Pairwise-judge verdicts found in one model's scores, in model terms.

    ``this_is`` says which session model (``a`` or ``b``) these scores belong to. A pairwise score is
    one whose details carry ``winner`` in {candidate, vs, tie}; "candidate" is the model whose item
    holds the score, "vs" the compared model. It counts only when the compared model is the session's
    other model: named in details (``vs``/``vs_model``/``baseline``) or, when unnamed, the run's baseline.
    """
    found: list[JudgeVerdict] = []
    for name, score in sorted(scores.items()):
        if score.error:
            continue
        details = score.details
        winner = details.get("winner")
        if winner not in ("candidate", "vs", "tie"):
            continue
        compared = None
        for key in ("vs", "vs_model", "baseline", "compared_with"):
            if isinstance(details.get(key), str):
                compared = details[key]
                break
        if compared is None:
            compared = baseline
        if compared != other_name:
            continue
        if winner == "tie":
            v = "tie"
        else:
            this_wins = winner == "candidate"
            a_wins = this_wins == (this_is == "a")
            v = "a_better" if a_wins else "b_better"
        found.append(JudgeVerdict(name, v))
    return found


def unblind(store: Store, session_id: str, *, max_unshippable: float = 2, per: int = 20, save: bool = True) -> dict[str, Any]:
    """Compute the session's results; with ``save``, store them (``review_results``) for reports and gates."""
    if per < 1 or max_unshippable < 0:
        raise UserError("the threshold needs --max-unshippable >= 0 and --per >= 1", where="--per")
    session = get_session(store, session_id)
    pairs = session_pairs(store, session.session_id)
    verdicts = reviewer_verdicts(store, session.session_id)
    run = store.get_run(session.run_id)
    items = {(it.model, it.suite, it.sample_id): it for it in store.run_items(session.run_id)}
    by_token = {p.token: p for p in pairs}
    multi_suite = len({p.suite for p in pairs}) > 1

    def item_name(p: ReviewPair) -> str:
        return f"{p.suite}/{p.sample_id}" if multi_suite else p.sample_id

    # per pair: reviewer -> model verdict; per pair and model: reviewer ship answers
    votes: dict[str, dict[str, str]] = defaultdict(dict)
    ships: dict[tuple[str, str], list[bool]] = defaultdict(list)
    notes: dict[str, list[dict[str, str]]] = defaultdict(list)
    reviewers: set[str] = set()
    adjudicated: dict[str, tuple[str, str]] = {}  # token -> (model verdict, by whom)
    for v in verdicts:
        p = by_token.get(v.token)
        if p is None:
            continue
        if v.source == ADJUDICATION:
            if v.verdict is not None:
                adjudicated[p.token] = (to_model_verdict(v.verdict, p.left_model), v.reviewer.removeprefix(ADJUDICATOR_PREFIX))
            continue
        if v.verdict is not None:
            votes[p.token][v.reviewer] = to_model_verdict(v.verdict, p.left_model)
            reviewers.add(v.reviewer)
        a_ship, b_ship = (v.ship_left, v.ship_right) if p.left_model == "a" else (v.ship_right, v.ship_left)
        if a_ship is not None:
            ships[(p.token, "a")].append(a_ship)
        if b_ship is not None:
            ships[(p.token, "b")].append(b_ship)
        if v.note.strip():
            notes[p.token].append({"reviewer": v.reviewer, "note": v.note})

    item_rows: list[dict[str, Any]] = []
    tally: Counter[str] = Counter()
    unship: dict[str, list[str]] = {"a": [], "b": []}
    reviewed_ship: Counter[str] = Counter()
    for p in pairs:
        row: dict[str, Any] = {
            "suite": p.suite, "sample_id": p.sample_id, "position": p.position,
            "left": session.model_a if p.left_model == "a" else session.model_b,
            "identical": p.identical, "stratum": p.stratum,
            "verdicts": dict(sorted(votes[p.token].items())), "verdict": None,
            "ship": {}, "notes": notes.get(p.token, []),
        }
        if p.token in adjudicated:
            row["verdict"], row["adjudicated_by"] = adjudicated[p.token]
            tally[row["verdict"]] += 1
        elif votes[p.token]:
            row["verdict"] = majority(list(votes[p.token].values()))
            tally[row["verdict"]] += 1
        for side, model in (("a", session.model_a), ("b", session.model_b)):
            answers = ships.get((p.token, side), [])
            if answers:
                no = sum(1 for x in answers if not x)
                shippable = no * 2 < len(answers)
                row["ship"][model] = shippable
                reviewed_ship[side] += 1
                if not shippable:
                    unship[side].append(item_name(p))
        item_rows.append(row)

    unshippable: dict[str, Any] = {}
    for side, model in (("a", session.model_a), ("b", session.model_b)):
        reviewed = reviewed_ship[side]
        allowed = max_unshippable * reviewed / per
        count = len(unship[side])
        model_ids = {it.model_id for (m, _, _), it in items.items() if m == model}
        unshippable[model] = {
            "model_id": next(iter(model_ids)) if len(model_ids) == 1 else None,
            "count": count, "reviewed": reviewed, "max": max_unshippable, "per": per,
            "allowed": allowed, "passed": (count <= allowed) if reviewed else None, "items": unship[side],
        }

    wr = win_rate(tally["a_better"], tally["b_better"], tally["tie"] + tally["both_bad"])
    wr.update(model=session.model_a, vs=session.model_b)

    # agreement between reviewers, pair by pair of reviewers, on the items both answered
    rev_pairs: list[dict[str, Any]] = []
    for r1, r2 in combinations(sorted(reviewers), 2):
        common = [t for t in votes if r1 in votes[t] and r2 in votes[t]]
        x = [votes[t][r1] for t in common]
        y = [votes[t][r2] for t in common]
        rev_pairs.append({
            "reviewers": [r1, r2], "n": len(common),
            "agreement": (sum(1 for a, b in zip(x, y) if a == b) / len(common)) if common else None,
            "kappa": cohen_kappa(x, y),
        })
    kappas = [r["kappa"] for r in rev_pairs if r["kappa"] is not None]
    # the mean of pairwise Cohen's kappas (Light's kappa) summarises more than two reviewers
    reviewer_agreement: dict[str, Any] = {"pairs": rev_pairs, "mean_kappa": sum(kappas) / len(kappas) if kappas else None}
    # over all reviewers at once (any number per pair, missing answers allowed): Krippendorff's alpha, nominal,
    # on the model verdicts, with a bootstrap CI over pairs
    reviewer_agreement["krippendorff_alpha"] = krippendorff_alpha_nominal([list(votes[p.token].values()) for p in pairs]).as_dict()
    # pairs where the reviewers who answered split: the list a lead adjudicates
    disagreements = [
        {"suite": p.suite, "sample_id": p.sample_id, "position": p.position, "verdicts": dict(sorted(votes[p.token].items())),
         "adjudicated": adjudicated[p.token][0] if p.token in adjudicated else None}
        for p in pairs if len(set(votes[p.token].values())) > 1
    ]

    judge = _judge_agreement(session, pairs, votes, items, run.record.baseline if run.record else None)

    warnings: list[str] = []
    answered = sum(1 for p in pairs if votes[p.token] or p.token in adjudicated)
    if answered < len(pairs):
        warnings.append(f"{len(pairs) - answered} of {len(pairs)} pairs have no verdict yet")
    result: dict[str, Any] = {
        "session_id": session.session_id,
        "run_id": session.run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "models": {"a": session.model_a, "b": session.model_b},
        "n_pairs": len(pairs),
        "items_reviewed": answered,
        "reviewers": sorted(reviewers),
        "verdicts": {k: tally[k] for k in MODEL_VERDICTS},
        "win_rate": wr,
        "unshippable": unshippable,
        "reviewer_agreement": reviewer_agreement,
        "disagreements": disagreements,
        "judge_agreement": judge,
        "items": item_rows,
        "warnings": warnings,
    }
    if save:
        store.write(lambda: store.execute(
            "INSERT INTO review_results VALUES (?,?,?,?) ON CONFLICT (session_id) DO UPDATE SET "
            "run_id = excluded.run_id, created = excluded.created, result = excluded.result",
            (session.session_id, session.run_id, time.time(), json.dumps(result, ensure_ascii=False)),
        ))
    return result


def _judge_agreement(
    session: ReviewSession,
    pairs: list[ReviewPair],
    votes: dict[str, dict[str, str]],
    items: dict[tuple[str, str, str], Any],
    baseline: str | None,
) -> dict[str, Any] | None:
    """Cohen's kappa between the human item verdicts and each pairwise judge (a / b / tie)."""
    per_judge: dict[str, dict[str, str]] = defaultdict(dict)  # scorer -> token -> verdict
    for p in pairs:
        for side, model, other in (("a", session.model_a, session.model_b), ("b", session.model_b, session.model_a)):
            it = items.get((model, p.suite, p.sample_id))
            if it is None:
                continue
            for jv in judge_verdict(it.scores, this_is=side, other_name=other, baseline=baseline):
                per_judge[jv.scorer].setdefault(p.token, jv.verdict)
    if not per_judge:
        return None
    judges: list[dict[str, Any]] = []
    for scorer, jverdicts in sorted(per_judge.items()):
        common = [p.token for p in pairs if p.token in jverdicts and votes.get(p.token)]
        human = [_preference(majority(list(votes[t].values()))) for t in common]
        machine = [jverdicts[t] for t in common]
        confusion = {h: {m: 0 for m in PREFERENCE} for h in PREFERENCE}
        for h, m in zip(human, machine):
            confusion[h][m] += 1
        per_reviewer = {}
        for r in sorted({r for t in common for r in votes[t]}):
            ts = [t for t in common if r in votes[t]]
            per_reviewer[r] = {"n": len(ts), "kappa": cohen_kappa([_preference(votes[t][r]) for t in ts], [jverdicts[t] for t in ts])}
        judges.append({
            "judge": scorer, "n": len(common), "judged": len(jverdicts),
            "agreement": (sum(1 for h, m in zip(human, machine) if h == m) / len(common)) if common else None,
            "kappa": cohen_kappa(human, machine),
            "confusion": confusion,  # rows: human, columns: judge
            "per_reviewer": per_reviewer,
        })
    return {"judges": judges, **{k: judges[0][k] for k in ("judge", "n", "agreement", "kappa")}}


def _preference(v: str) -> str:
    return "tie" if v == "both_bad" else v


# --- for reports and gates --------------------------------------------------------------------


def review_summary(store: Store, run_id: str) -> dict[str, Any] | None:
    """The newest unblinded review of ``run_id`` (without per-item rows), or None when there is none.

    Keys: session_id, run_id, created, models {a, b}, n_pairs, items_reviewed, reviewers, verdicts,
    win_rate {model, vs, wins, losses, ties, rate, ci_low, ci_high, p_value, rate_ties_half},
    unshippable {model: {count, reviewed, allowed, max, per, passed, items}}, reviewer_agreement,
    judge_agreement (None without a pairwise judge), warnings.
    """
    for res in stored_results(store, store.get_run(run_id).run_id):
        return {k: v for k, v in res.items() if k != "items"}
    return None


def unshippable_counts(store: Store, run_id: str) -> dict[str, tuple[int, int]]:
    """Model -> (would-not-ship count, items reviewed); see :func:`unshippable_details`.

    A gate with ``max: 2`` means 2 per 20 items: its limit over ``reviewed`` items is ``2 * reviewed / 20``.
    """
    return {m: (d["count"], d["reviewed"]) for m, d in unshippable_details(store, run_id).items()}


def render_markdown(result: dict[str, Any]) -> str:
    """The unblinded result as a Markdown section (fits the CLI, a PR comment, or the report)."""
    a, b = result["models"]["a"], result["models"]["b"]
    wr = result["win_rate"]
    v = result["verdicts"]
    lines = [
        f"## Blinded human review ({result['session_id']})",
        "",
        f"{result['items_reviewed']} of {result['n_pairs']} pairs reviewed by "
        f"{len(result['reviewers'])} reviewer(s): {', '.join(_md(r) for r in result['reviewers']) or 'none'}.",
        "",
        f"- **{_md(a)}** better: {v['a_better']}, **{_md(b)}** better: {v['b_better']}, tie: {v['tie']}, both bad: {v['both_bad']}",
    ]
    if wr["rate"] is not None:
        lines.append(
            f"- Win rate of {_md(a)} over {_md(b)}: **{wr['rate']:.2f}** "
            f"({wr['wins']}/{wr['decisive']} decisive pairs, {int(wr['confidence'] * 100)}% CI {wr['ci_low']:.2f}-{wr['ci_high']:.2f}, "
            f"sign test p = {wr['p_value']:.3g}); ties counted as half: {wr['rate_ties_half']:.2f}"
        )
    else:
        lines.append(f"- Win rate of {_md(a)} over {_md(b)}: no decisive pairs yet")
    lines += ["", "| model | would not ship | reviewed | allowed | verdict |", "| --- | --- | --- | --- | --- |"]
    for model, u in result["unshippable"].items():
        verdict = "no answers" if u["passed"] is None else ("ship" if u["passed"] else "**do not ship**")
        lines.append(
            f"| {_md(model)} | {u['count']} | {u['reviewed']} | {u['allowed']:.1f} (max {u['max']:g} per {u['per']}) | {verdict} |"
        )
    ra = result["reviewer_agreement"]
    if ra["pairs"]:
        lines += ["", "Agreement between reviewers:"]
        for p in ra["pairs"]:
            k = "n/a" if p["kappa"] is None else f"{p['kappa']:.2f}"
            agr = "n/a" if p["agreement"] is None else f"{p['agreement']:.0%}"
            lines.append(f"- {_md(p['reviewers'][0])} vs {_md(p['reviewers'][1])}: {agr} agree on {p['n']} pairs, Cohen's kappa {k}")
        ka = ra.get("krippendorff_alpha") or {}
        if ka.get("alpha") is not None:
            ci = f", {int(ka['confidence'] * 100)}% CI {ka['ci_low']:.2f} to {ka['ci_high']:.2f}" if ka.get("ci_low") is not None else ""
            lines.append(f"- all reviewers: Krippendorff's alpha (nominal) **{ka['alpha']:.2f}**{ci}, over {ka['units']} pairs answered by two or more")
        dis = [d for d in (result.get("disagreements") or []) if not d.get("adjudicated")]
        settled = len(result.get("disagreements") or []) - len(dis)
        if settled:
            lines.append(f"- {settled} split pair(s) adjudicated by a lead")
        if dis:
            lines.append(f"- {len(dis)} pair(s) where reviewers split (to adjudicate): "
                         + ", ".join(_md(f"{d['sample_id']} (" + ", ".join(f"{r}: {v}" for r, v in d["verdicts"].items()) + ")") for d in dis[:10])
                         + (" ..." if len(dis) > 10 else ""))
    ja = result.get("judge_agreement")
    if ja:
        lines += ["", "Agreement between humans and the pairwise judge:"]
        for j in ja["judges"]:
            k = "n/a" if j["kappa"] is None else f"{j['kappa']:.2f}"
            agr = "n/a" if j["agreement"] is None else f"{j['agreement']:.0%}"
            lines.append(f"- {_md(j['judge'])}: {agr} agree on {j['n']} pairs, Cohen's kappa {k}")
    for w in result.get("warnings", []):
        lines.append(f"\nWarning: {w}")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Escape a name for Markdown tables (model names are user text)."""
    return (
        str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        .replace("*", "\\*").replace("_", "\\_").replace("`", "\\`").replace("\n", " ")
    )
