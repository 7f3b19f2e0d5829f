"""`evalkit data convert`: Alpaca, ShareGPT, prompt/completion <-> chat, round trips, --system, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.data.convert import convert_file, from_chat, to_chat
from evalkit.data.validate import validate_files

from .conftest import chat


def _read(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines()]


ALPACA = [
    {"instruction": "Translate to French", "input": "cat", "output": "chat", "id": "a1"},
    {"instruction": "Say hi", "input": "", "output": "hi", "tags": ["greet"]},
    {"instruction": "And now?", "output": "bye", "system": "Be terse.", "history": [["hello", "hi"]], "source": "web"},
]


def test_alpaca_to_chat(jsonl, tmp_path):
    src = jsonl("alpaca.jsonl", ALPACA)
    r = convert_file(src, tmp_path / "chat.jsonl")
    assert (r.source_format, r.written, r.extra_keys) == ("alpaca", 3, {"source": 1})
    rows = _read(tmp_path / "chat.jsonl")
    assert rows[0] == {
        "id": "a1",
        "messages": [{"role": "user", "content": "Translate to French\n\ncat"}, {"role": "assistant", "content": "chat"}],
    }
    assert rows[1]["tags"] == ["greet"] and rows[1]["messages"][0]["content"] == "Say hi"
    assert [m["role"] for m in rows[2]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert rows[2]["metadata"] == {"source": "web"}
    assert validate_files([tmp_path / "chat.jsonl"]).ok


def test_sharegpt_and_prompt_completion_to_chat(jsonl, tmp_path):
    sg = jsonl(
        "sg.jsonl",
        [{"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}],
    )
    convert_file(sg, tmp_path / "c1.jsonl")
    assert _read(tmp_path / "c1.jsonl")[0]["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
    ]
    pc = jsonl(
        "pc.jsonl",
        [
            {"prompt": "2+2?", "completion": "4"},
            {"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "yo"}]},
        ],
    )
    convert_file(pc, tmp_path / "c2.jsonl")
    rows = _read(tmp_path / "c2.jsonl")
    assert rows[0]["messages"] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert rows[1]["messages"][1] == {"role": "assistant", "content": "yo"}


def test_system_flag_sets_or_replaces_the_system_prompt(jsonl, tmp_path, capsys):
    src = jsonl("alpaca.jsonl", ALPACA)
    out = tmp_path / "chat.jsonl"
    assert main(["data", "convert", str(src), "--out", str(out), "--system", "You are Bob.", "--no-progress"]) == 0
    rows = _read(out)
    for r in rows:
        assert r["messages"][0] == {"role": "system", "content": "You are Bob."}
        assert sum(m["role"] == "system" for m in r["messages"]) == 1
    assert "system prompt set on 3" in capsys.readouterr().out


CHAT_ROWS = [
    chat("What is 2+2?", "4", id="1", tags=["math"]),
    chat("Name a colour", "blue", system="Answer in one word.", id="2", metadata={"src": "x"}),
]


@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt", "prompt-completion", "chat"])
def test_chat_round_trips_through_every_format(fmt, jsonl, tmp_path):
    src = jsonl("chat.jsonl", CHAT_ROWS + ([chat("a", "b") | {"messages": chat("a", "b")["messages"] + chat("c", "d")["messages"]}]))
    mid, back = tmp_path / f"mid.{fmt}.jsonl", tmp_path / "back.jsonl"
    convert_file(src, mid, target_format=fmt)
    convert_file(mid, back, source_format=fmt)
    assert _read(back) == _read(src)


@pytest.mark.parametrize(
    "fmt,rows",
    [
        ("sharegpt", [{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}], "id": "z"}]),
        ("prompt-completion", [{"prompt": "Q", "completion": "A"}, {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]}]),
        ("alpaca", [{"instruction": "Q", "input": "", "output": "A", "system": "S", "history": [["q0", "a0"]]}]),
    ],
)
def test_format_round_trips_through_chat(fmt, rows, jsonl, tmp_path):
    src = jsonl("src.jsonl", rows)
    convert_file(src, tmp_path / "chat.jsonl")
    convert_file(tmp_path / "chat.jsonl", tmp_path / "back.jsonl", target_format=fmt)
    assert _read(tmp_path / "back.jsonl") == rows


def test_alpaca_input_is_folded_into_the_user_turn_stably():
    row = {"instruction": "Translate", "input": "cat", "output": "chat"}
    once, _ = to_chat(row, "alpaca")
    again, _ = to_chat(from_chat(once, "alpaca"), "alpaca")
    assert once == again


def test_bad_line_names_file_and_line_and_writes_nothing(jsonl, tmp_path, capsys):
    src = jsonl("sg.jsonl", [
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "robot", "value": "A"}]},
    ])
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(src), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {src}:2: sharegpt: conversations[1]: unsupported 'from' 'robot'")
    assert len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl.*"))  # atomic: no half-written file


def test_unknown_format_and_overwrite_refused(jsonl, tmp_path, capsys):
    src = jsonl("x.jsonl", [{"question": "q", "answer": "a"}])
    assert main(["data", "convert", str(src), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert f"{src}:1: cannot tell the format" in capsys.readouterr().err
    assert main(["data", "convert", str(src), "--out", str(src)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert main(["data", "convert", str(src), "--out", str(tmp_path / "o.jsonl"), "--to", "csv"]) == 2
