"""CSV export/import (still blinded) and the `evalkit review` commands through evalkit.cli.main."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from evalkit.cli import main
from evalkit.errors import DataError
from evalkit.review import create_session, export_csv, import_csv, reviewer_verdicts, session_pairs, unblind

from .conftest import BASE, BASE_ID, BASE_PATH, CAND, CAND_ID, CAND_PATH, make_run


def read_rows(path):
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path, rows):
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_export_is_blind_and_import_round_trips(store, tmp_path):
    run = make_run(store, 8, cand_output=lambda i: f"=HYPERLINK(\"http://x\") GOOD {i}" if i == 0 else f"GOOD {i}")
    sid = create_session(store, run, n=8, seed=1).session.session_id
    out = tmp_path / "r.csv"
    assert export_csv(store, sid, out) == 8
    text = out.read_text(encoding="utf-8-sig")
    for secret in (CAND, BASE, CAND_PATH, BASE_PATH, CAND_ID, BASE_ID, run, "s000", "regression"):
        assert secret not in text
    rows = read_rows(out)
    assert [r["token"] for r in rows] == [p.token for p in session_pairs(store, sid)]
    formula = [c for r in rows for c in (r["output_a"], r["output_b"]) if "HYPERLINK" in c]
    assert formula == ["'=HYPERLINK(\"http://x\") GOOD 0"]  # a spreadsheet shows it, never runs it
    assert rows[0]["prompt"].startswith("[system] Answer in JSON.")
    # fill it in: the side showing GOOD wins everywhere, B's output flagged on the first row
    for r in rows:
        r["verdict"] = "A" if "GOOD" in r["output_a"] else "b better"
        r["a_would_ship"], r["b_would_ship"] = "yes", "no" if r is rows[0] else "Y"
        r["note"] = "=1+1" if r is rows[0] else ""
    write_rows(out, rows)
    assert import_csv(store, sid, out, reviewer="carol") == 8
    v = {x.token: x for x in reviewer_verdicts(store, sid, "carol")}
    assert v[rows[0]["token"]].note == "=1+1" and v[rows[0]["token"]].ship_right is False
    res = unblind(store, sid)
    assert res["win_rate"]["wins"] == 8 and res["win_rate"]["losses"] == 0
    # re-export for carol carries her answers; importing it again changes nothing
    export_csv(store, sid, out, reviewer="carol")
    again = read_rows(out)
    assert again[0]["verdict"] in ("A", "B") and again[0]["reviewer"] == "carol" and again[0]["note"] == "'=1+1"
    assert import_csv(store, sid, out) == 8
    assert unblind(store, sid)["win_rate"]["wins"] == 8


def test_import_errors_name_file_and_line(store, tmp_path):
    run = make_run(store, 3)
    sid = create_session(store, run, n=3).session.session_id
    out = tmp_path / "r.csv"
    export_csv(store, sid, out)
    rows = read_rows(out)

    def check(mutate, match, line):
        rs = [dict(r) for r in rows]
        mutate(rs)
        write_rows(out, rs)
        with pytest.raises(DataError, match=match) as e:
            import_csv(store, sid, out, reviewer="dan")
        assert e.value.where == str(out) and e.value.line == line

    # prompts span several physical lines; errors still name the record's first line
    first_line_of_row2 = 1 + sum(1 + sum(c.count("\n") for c in r.values()) for r in rows[:1]) + 1
    check(lambda rs: rs[1].update(verdict="maybe"), "verdict must be", first_line_of_row2)
    check(lambda rs: rs[0].update(verdict="A", a_would_ship="perhaps"), "a_would_ship", 2)
    check(lambda rs: rs[0].update(verdict="A", token="forged"), "not a pair", 2)
    rs = [dict(r) for r in rows]
    rs[0]["verdict"] = "A"
    write_rows(out, rs)
    with pytest.raises(DataError, match="reviewer"):
        import_csv(store, sid, out)
    assert reviewer_verdicts(store, sid) == []  # nothing saved from a file with an error
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="missing column 'token'"):
        import_csv(store, sid, tmp_path / "bad.csv", reviewer="x")


def test_cli_new_unblind_export_import(store, tmp_path, capsys):
    make_run(store, 10)
    db = str(store.path)
    assert main(["review", "new", "latest", "--n", "6", "--seed", "5", "--store", db]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    sid = out[-1]
    assert sid.startswith("rs-") and "6 pairs" in out[0]
    csv_path = tmp_path / "x.csv"
    assert main(["review", "export", sid, "--out", str(csv_path), "--store", db]) == 0
    rows = read_rows(csv_path)
    for r in rows:
        r["verdict"], r["a_would_ship"], r["b_would_ship"] = ("A" if "GOOD" in r["output_a"] else "B"), "yes", "yes"
    write_rows(csv_path, rows)
    assert main(["review", "import", sid, str(csv_path), "--reviewer", "erin", "--store", db]) == 0
    capsys.readouterr()
    assert main(["review", "unblind", sid[:7], "--json", str(tmp_path / "u.json"), "--store", db]) == 0
    md = capsys.readouterr().out
    assert "Win rate" in md and "1.00" in md
    assert json.loads((tmp_path / "u.json").read_text())["win_rate"]["wins"] == 6
    assert main(["review", "list", "--store", db]) == 0
    assert "erin 6/6 (unblinded)" in capsys.readouterr().out


def test_cli_user_errors_exit_2(store, tmp_path, capsys):
    make_run(store, 3)
    db = str(store.path)
    assert main(["review", "new", "latest", "--a", "ghost", "--store", db]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--a: model 'ghost' is not in run" in err
    assert main(["review", "unblind", "rs-missing", "--store", db]) == 2
    assert main(["review", "serve", "rs-x", "--store", str(tmp_path / "none.db")]) == 2
    assert "no store here" in capsys.readouterr().err


def test_help_teaches(capsys):
    r = subprocess.run([sys.executable, "-m", "evalkit.cli", "review", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "evalkit review new latest" in r.stdout
    for cmd in ("new", "serve", "unblind", "export", "import", "list"):
        assert main(["review", cmd, "--help"]) == 0
        out = capsys.readouterr().out
        assert f"evalkit review {cmd}" in out and "Example:" in out, cmd

def test_cli_serve_answers_until_interrupted(store):
    import http.client
    import re
    import signal

    run = make_run(store, 3)
    sid = create_session(store, run, n=3).session.session_id
    proc = subprocess.Popen(
        [sys.executable, "-m", "evalkit.cli", "review", "serve", sid, "--port", "0", "--reviewer", "zoe", "--store", str(store.path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/session")
        body = json.loads(conn.getresponse().read())
        assert body["n"] == 3 and body["reviewer"] == "zoe"
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopped" in out


def test_a_review_session_calibrates_a_pairwise_judges_win_rate(tmp_path, capsys):
    """`review new --for-calibration` samples uniformly (identical pairs included); its verdicts are the
    labels of `evalkit calibrate --session`: PPI++ on the pairwise judge's win rate of A against B.
    """
    import json

    from evalkit import stats
    from evalkit.cli import main
    from evalkit.review.sessions import save_verdicts
    from evalkit.store import Store
    from evalkit.types import Score

    db = tmp_path / "store.db"
    judge = lambda i: 1.0 if i % 4 else 0.0  # noqa: E731 - the judge says cand wins 3 items of 4
    with Store(db) as store:
        run = make_run(store, n=60, cand_output=lambda i: "same" if i % 10 == 0 else f"GOOD {i}", base_output=lambda i: "same" if i % 10 == 0 else f"BAD {i}",
                       cand_scores=lambda i: {"pairwise": Score("pairwise", judge(i), None, kind="pairwise", details={"vs": BASE})})
    capsys.readouterr()
    assert main(["review", "new", run, "--n", "30", "--for-calibration", "--seed", "2", "--store", str(db)]) == 0
    sid = capsys.readouterr().out.strip().splitlines()[-1].split()[-1]
    with Store(db) as store:
        pairs = session_pairs(store, sid)
        assert len(pairs) == 30 and any(p.identical for p in pairs)  # uniform: identical outputs are not skipped
        # a human prefers cand on items whose number is even (wins 1/2 of them), a tie on multiples of 5
        rows, human = [], {}
        for p in pairs:
            i = int(p.sample_id[1:])
            win = 0.5 if i % 5 == 0 else (1.0 if i % 2 == 0 else 0.0)
            human[i] = win
            verdict = "tie" if win == 0.5 else ("left" if (win == 1.0) == (p.left_model == "a") else "right")
            rows.append((p.token, "ann", verdict, None, None, ""))
        save_verdicts(store, sid, rows, "csv")
    assert main(["calibrate", run, "--scorer", "pairwise", "--session", sid, "--store", str(db), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)[CAND]
    lab = sorted(human)
    est = stats.ppi_mean([human[i] for i in lab], [judge(i) for i in lab], [judge(i) for i in range(60) if i not in human])
    assert got["ppi_mean"] == pytest.approx(est.mean, abs=1e-9) and got["n_labeled"] == 30 and got["n_unlabeled"] == 30
    assert got["human_mean"] == pytest.approx(sum(human.values()) / 30)
    # a criterion scorer cannot take win verdicts
    assert main(["calibrate", run, "--scorer", "judge.quality", "--session", sid, "--store", str(db)]) == 2
    assert "--session labels are win / tie / loss verdicts" in capsys.readouterr().err
    assert main(["calibrate", run, "--scorer", "pairwise", "--store", str(db)]) == 2
    assert "give --labels FILE.csv or --session SESSION" in capsys.readouterr().err
