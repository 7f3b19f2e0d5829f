"""A custom check used by the `python: module:function` validator tests."""


def has_greeting(sample, completion):
    return {"passed": "hello" in completion.text.lower(), "reason": "looked for hello"}


def crashes(sample, completion):
    raise RuntimeError("boom")
