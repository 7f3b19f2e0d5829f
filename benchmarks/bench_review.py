"""What a 20-pair blinded review session costs end to end, machine side.

Builds a store with a run of two models (no real model needed), then times through the real CLI and a
real headless Chromium: `evalkit review new`, the page load, 20 verdicts by keyboard (as fast as a
script can press keys, so this is the tool's overhead, not a human's reading time), and
`evalkit review unblind`.

    python benchmarks/bench_review.py [--screenshot review.png] [--pairs 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evalkit.review import ReviewServer
from evalkit.store import RunItem, Store

PEOPLE = [("Maria", 34, "Porto"), ("Kenji", 51, "Osaka"), ("Ada", 28, "Lagos"), ("Luis", 45, "Quito"), ("Ines", 19, "Braga")]


def build_store(path: Path, n: int) -> str:
    st = Store(path)
    run_id = st.begin_run(name="bench", config_path=None, config={}, out_dir=None)
    items = []
    for i in range(n):
        name, age, city = PEOPLE[i % len(PEOPLE)]
        age += i
        sample = {
            "id": f"extract-{i:03d}",
            "messages": [
                {"role": "system", "content": "Reply with one JSON object: {\"name\": str, \"age\": int, \"city\": str}."},
                {"role": "user", "content": f"{name} is {age} and lives in {city}. Extract the person."},
            ],
            "reference": json.dumps({"name": name, "age": age, "city": city}),
            "tags": ["topic:extraction"],
            "metadata": {},
        }
        good = json.dumps({"name": name, "age": age, "city": city})
        bad = f'Sure! Here is the JSON:\n{{"name": "{name}", "age": "{age}"}}' if i % 3 else good
        for model, out in (("candidate", good), ("base", bad)):
            items.append(RunItem(run_id, model, model + "-id", "extraction", "v1", sample["id"], sample, f"k{model}{i}", out, None, {}))
    st.save_run_items(run_id, items)
    st.finish_run(run_id, {"baseline": "base", "candidates": ["candidate"]}, "passed")
    st.close()
    return run_id


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--screenshot", type=Path, default=None)
    args = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "store.db"
        build_store(db, args.pairs + 5)
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "evalkit.cli", "review", "new", "latest", "--n", str(args.pairs), "--store", str(db)],
                           capture_output=True, text=True, check=True)
        t_new = time.perf_counter() - t
        sid = r.stdout.strip().splitlines()[-1]

        st = Store(db)
        t = time.perf_counter()
        server = ReviewServer(st, sid, port=0, reviewer="bench")
        server.start()
        t_serve = time.perf_counter() - t
        with sync_playwright() as p:
            t = time.perf_counter()
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            t_browser = time.perf_counter() - t
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            t = time.perf_counter()
            page.goto(server.url)
            expect(page.locator("#position")).to_have_text(f"Pair 1 of {args.pairs}")
            t_load = time.perf_counter() - t
            t = time.perf_counter()
            shot_taken = False
            for i in range(args.pairs):
                expect(page.locator("#position")).to_have_text(f"Pair {i + 1} of {args.pairs}")
                a_text, b_text = page.locator("#output-a").inner_text(), page.locator("#output-b").inner_text()
                if i >= 2 and a_text != b_text and args.screenshot and not shot_taken:
                    shot_taken = True
                    page.keyboard.press("1" if a_text.startswith("{") else "2")
                    page.keyboard.press("b" if a_text.startswith("{") else "a")
                    page.keyboard.press("r")
                    page.fill("#note", "The other side wraps the JSON in prose and gives the age as a string.")
                    page.locator("#note").blur()
                    expect(page.locator("body")).not_to_have_attribute("data-saving", "yes")
                    page.screenshot(path=str(args.screenshot), full_page=True)
                    page.keyboard.press("r")
                a_json = page.locator("#output-a").inner_text().startswith("{")
                page.keyboard.press("1" if a_json else "2")
                page.keyboard.press("j")
            expect(page.locator("body")).not_to_have_attribute("data-saving", "yes")
            t_verdicts = time.perf_counter() - t
            browser.close()
        server.stop()
        st.close()
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "evalkit.cli", "review", "unblind", sid, "--store", str(db)], capture_output=True, text=True, check=True)
        t_unblind = time.perf_counter() - t

    print(f"review new (CLI, incl. Python start-up): {t_new:6.2f} s")
    print(f"server start:                            {t_serve:6.2f} s")
    print(f"chromium launch (test harness only):     {t_browser:6.2f} s")
    print(f"page load to first pair:                 {t_load:6.2f} s")
    print(f"{args.pairs} verdicts by keyboard, all saved:     {t_verdicts:6.2f} s  ({1000 * t_verdicts / args.pairs:.0f} ms per pair)")
    print(f"review unblind (CLI):                    {t_unblind:6.2f} s")
    print(f"tool overhead for the session:           {t_new + t_serve + t_load + t_verdicts + t_unblind:6.2f} s")


if __name__ == "__main__":
    main()
