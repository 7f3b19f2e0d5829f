"""`evalkit data validate`: every problem with its FILE:LINE, all in one pass; summaries; exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.data.validate import validate_files

from .conftest import chat


def _bad_file(jsonl) -> Path:
    return jsonl(
        "bad.jsonl",
        [
            chat("hi", "hello", id="a"),  # 1 good
            '{"id": "b", "messages": [{"role": "user"',  # 2 invalid JSON
            {"id": "c"},  # 3 missing messages
            {"id": "d", "messages": []},  # 4 empty messages
            {"id": "e", "messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},  # 5 unknown role
            "",  # 6 blank: skipped, still counted as a line
            chat("only a question", None, id="f"),  # 7 does not end with the assistant
            {"id": "g", "messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": 3}]},  # 8 empty + non-string
            chat("one two three four five six", "a b c d e f g", id="a"),  # 9 duplicate id + too long
            {"id": "h", "messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a"}]},  # 10 order
            {"id": "i", "messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]},  # 11 system later
            [1, 2],  # 12 not an object
            {"id": "j", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "extra": 1},  # 13 unknown key
            {"id": "k", "messages": [{"role": "assistant", "content": "a"}]},  # 14 starts with assistant
        ],
    )


EXPECTED = [
    (2, "invalid_json"),
    (3, "missing_messages"),
    (4, "empty_messages"),
    (5, "unknown_role"),
    (7, "wrong_order"),
    (8, "empty_content"),
    (8, "bad_content"),
    (9, "too_long"),
    (9, "duplicate_id"),
    (10, "wrong_order"),
    (11, "wrong_order"),
    (12, "not_object"),
    (13, "unknown_key"),
    (14, "wrong_order"),
]


def test_every_problem_found_with_its_line_in_one_pass(jsonl):
    path = _bad_file(jsonl)
    result = validate_files([path], max_tokens=10)
    assert not result.ok
    assert [(p.line, p.kind) for p in result.problems] == EXPECTED
    text = [str(p) for p in result.problems]
    assert text[0].startswith(f"{path}:2: invalid JSON")
    assert f"{path}:9: duplicate id 'a' (first on line 1)" in text
    assert any(t.startswith(f"{path}:9: example is 13 whitespace tokens long") for t in text)
    assert any("messages[1] is a second user turn" in t for t in text)
    assert any("messages[1] is a system message after the first turn" in t for t in text)
    assert any("must end with an assistant turn" in t and t.startswith(f"{path}:7:") for t in text)
    s = result.summaries[0]
    assert s.lines == 14 and s.examples == 13 and s.valid == 2  # lines 1 and 9 are well-formed
    assert s.problems_by_kind["wrong_order"] == 4


def test_cli_prints_all_problems_and_exits_2(jsonl, capsys):
    path = _bad_file(jsonl)
    code = main(["data", "validate", str(path), "--max-tokens", "10", "--no-progress"])
    assert code == 2
    out = capsys.readouterr()
    lines = [l for l in out.out.splitlines() if l]
    assert len(lines) == len(EXPECTED)
    assert [int(l.split(":")[1]) for l in lines] == [ln for ln, _ in EXPECTED]
    assert "14 problem(s) in 1 file(s)" in out.err


def test_good_file_summary_and_exit_0(jsonl, capsys, tmp_path):
    path = jsonl(
        "good.jsonl",
        [
            chat("a b c", "d e", system="Be brief.", id=1, tags=["x"]),
            chat("a b c d", "e", system="Be brief.", id=2),
            chat("q", "r", system="Be verbose.", id=3),
            chat("q q", "r r r r r r"),
        ],
    )
    out_json = tmp_path / "v.json"
    assert main(["data", "validate", str(path), "--json", str(out_json), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 examples, 4 valid, 0 problems" in out
    assert "system prompts: 2 variant(s), 1 example(s) without one" in out
    assert "ok: 1 file(s), no problems" in out
    data = json.loads(out_json.read_text())
    files = data["files"][0]
    assert data["ok"] is True
    assert files["lengths"]["min"] == 4 and files["lengths"]["max"] == 8
    assert files["system_prompts"]["variants"][0] == {"text": "Be brief.", "count": 2, "first_line": 1}


def test_prompts_flag_accepts_eval_items(jsonl):
    path = jsonl("eval.jsonl", [chat("question", None, id="q1")])
    assert validate_files([path]).problems[0].kind == "wrong_order"
    assert validate_files([path], require_assistant=False).ok


def test_several_files_and_a_missing_one(jsonl, tmp_path, capsys):
    a = jsonl("a.jsonl", [chat("x", "y", id="1")])
    b = jsonl("b.jsonl", [chat("x", "y", id="1"), {"messages": "nope"}])  # ids are per file
    code = main(["data", "validate", str(a), str(b), str(tmp_path / "nope.jsonl"), "-q", "--no-progress"])
    out = capsys.readouterr().out.splitlines()
    assert code == 2
    assert out == [f"{b}:2: 'messages' must be a list, got str", f"{tmp_path / 'nope.jsonl'}: file not found"]


def _word_tokenizer(folder: Path) -> Path:
    """A real Hugging Face tokenizer (word level, no chat template), built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1}
    for w in "a b c d e f g hello world".split():
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # one token per character
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    fast.save_pretrained(folder)
    return folder


def test_max_tokens_with_a_real_tokenizer(jsonl, tmp_path):
    tok = _word_tokenizer(tmp_path / "tok")
    # character-level tokenizer: "abcdef" is 6 tokens but 1 whitespace token
    path = jsonl("t.jsonl", [chat("abc", "def", id="1"), chat("abcdefgh", "abcdefgh", id="2")])
    r = validate_files([path], max_tokens=10, tokenizer=tok)
    assert [(p.line, p.kind) for p in r.problems] == [(2, "too_long")]
    assert "16 tokens (tok)" in r.problems[0].message
    assert r.summaries[0].lengths.max == 16
    # without the tokenizer both are short
    assert validate_files([path], max_tokens=10).ok


def test_bad_tokenizer_is_a_user_error(jsonl, tmp_path, capsys):
    path = jsonl("t.jsonl", [chat("a", "b")])
    assert main(["data", "validate", str(path), "--tokenizer", str(tmp_path / "none")]) == 2
    assert "--tokenizer: not found" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["validate", "convert", "split", "audit"])
def test_help_teaches_with_an_example(cmd, capsys):
    assert main(["data", cmd, "--help"]) == 0
    assert "Example:" in capsys.readouterr().out


def _varied_lines(n: int, seed: int = 7) -> list[bytes]:
    """Good and bad lines of every shape the fast path must agree with the slow path on."""
    import random

    r = random.Random(seed)
    words = ["alpha", "beta", "  gamma\t", "delta\n", "ε", "\u3000wide\u3000space", "nb\xa0sp", "tab\x1fsep", "x\u0000y", ""]
    out: list[bytes] = []
    for i in range(n):
        k = r.randrange(12)
        msgs = [{"role": "user", "content": " ".join(r.choice(words) for _ in range(r.randrange(0, 6)))},
                {"role": "assistant", "content": " ".join(r.choice(words) for _ in range(r.randrange(0, 6)))}]
        if r.random() < 0.5:
            msgs.insert(0, {"role": "system", "content": r.choice(["You help.", "Be brief.", " ", "S" * r.randrange(1, 3)])})
        obj: object = {"id": r.choice([f"i{r.randrange(n)}", r.randrange(n), f"i{i}"]), "messages": msgs}
        if k == 0:
            obj = {**obj, "id": r.choice([None, True, "", 1.5])}  # type: ignore[dict-item]
        elif k == 1:
            msgs[-1]["role"] = r.choice(["bot", "user", "system"])
        elif k == 2:
            obj = {**obj, "extra": 1}  # type: ignore[dict-item]
        elif k == 3:
            msgs[0]["name"] = "n"
        elif k == 4:
            obj = {**obj, "tags": r.choice([["a"], "a", None, [1]]), "metadata": r.choice([{}, None, [1]])}  # type: ignore[dict-item]
        elif k == 5:
            del obj["id"]  # type: ignore[attr-defined]
        line = json.dumps(obj, ensure_ascii=r.random() < 0.5).encode("utf-8", "surrogatepass")
        if k == 6:
            line = line[: r.randrange(1, len(line))]
        elif k == 7 and r.random() < 0.3:
            line = line.replace(b"alpha", b"alph\xe9")
        elif k == 8 and r.random() < 0.3:
            line = b"   "
        out.append(line)
    return out


def test_fast_and_slow_paths_report_the_same_problems_and_summary(tmp_path, monkeypatch):
    from evalkit.data import _fastchat, validate

    path = tmp_path / "varied.jsonl"
    path.write_bytes(b"\n".join(_varied_lines(3000)) + b"\n")
    monkeypatch.setattr(validate, "_BLOCK_BYTES", 4096)  # many blocks: fast lines and slow lines interleave
    fast = validate_files([path], max_tokens=6)
    monkeypatch.setattr(_fastchat, "available", lambda: False)
    slow = validate_files([path], max_tokens=6)
    assert len(fast.problems) > 1000 and {p.kind for p in fast.problems} >= {
        "invalid_json", "encoding", "bad_id", "unknown_role", "wrong_order", "unknown_key", "empty_content", "too_long", "duplicate_id", "bad_tags"}
    assert [str(p) for p in fast.problems] == [str(p) for p in slow.problems]
    assert fast.summaries[0].as_dict() == slow.summaries[0].as_dict()


def test_token_counts_equal_str_split():
    from evalkit.data._fastchat import token_counts

    texts = ["", " ", "a", " a  b\tc\nd ", "x\u3000y", "nb\xa0sp", "a\x1cb", "a\x00b", "ε ζ", "\u2028z", "end "]
    assert token_counts(texts).tolist() == [len(t.split()) for t in texts]
    ascii_only = ["one two", "", "  three   four five ", "six"]
    assert token_counts(ascii_only).tolist() == [2, 0, 3, 1]


def test_duplicate_ids_are_named_across_blocks_and_at_the_last_line(tmp_path, monkeypatch):
    from evalkit.data import validate

    monkeypatch.setattr(validate, "_BLOCK_BYTES", 300)  # a few lines per block
    lines = [json.dumps({"id": f"id{i % 7}", "messages": [{"role": "user", "content": f"q {i}"}, {"role": "assistant", "content": "a"}]}) for i in range(40)]
    path = tmp_path / "dups.jsonl"
    path.write_text("\n".join(lines))  # no newline after the last line
    dups = [p for p in validate_files([path]).problems if p.kind == "duplicate_id"]
    assert len(dups) == 40 - 7
    for p in dups:
        i = p.line - 1
        assert f"duplicate id 'id{i % 7}' (first on line {i % 7 + 1})" in p.message, p
