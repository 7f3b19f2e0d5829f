"""``EVALKIT_REQUIRE``: the real components a test run must not skip.

Elsewhere a test whose component is missing (no PostgreSQL server, no Chromium, no vLLM, no network
namespace for Ray, no qemu-user) skips with the reason. CI sets ``EVALKIT_REQUIRE=postgres,ray,vllm,
chromium,qemu`` (``.ci/run``): there, such a skip is turned into a failure that names the component,
so a green CI cannot hide a component that never ran.
"""

from __future__ import annotations

import os
import re

import pytest

# what each component's skip reasons say (tests/support/*, the tests' own skips and skipif markers)
COMPONENTS: dict[str, re.Pattern[str]] = {
    "postgres": re.compile(r"postgres|psycopg|pg_ctlcluster", re.I),
    "ray": re.compile(r"\bray\b|network namespace|unshare", re.I),
    "vllm": re.compile(r"vllm", re.I),
    "chromium": re.compile(r"chromium|playwright", re.I),
    "qemu": re.compile(r"qemu", re.I),
}


def required() -> set[str]:
    names = {n.strip() for n in os.environ.get("EVALKIT_REQUIRE", "").split(",") if n.strip()}
    unknown = names - set(COMPONENTS)
    if unknown:
        raise pytest.UsageError(f"EVALKIT_REQUIRE: unknown component(s) {', '.join(sorted(unknown))} (known: {', '.join(COMPONENTS)})")
    return names


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_KEY] = required()


_KEY = pytest.StashKey[set]()


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _reason(report)
    for name in sorted(item.config.stash.get(_KEY, set())):
        if COMPONENTS[name].search(reason):
            report.outcome = "failed"
            report.longrepr = f"EVALKIT_REQUIRE names '{name}', but this test skipped: {reason}"
            return
