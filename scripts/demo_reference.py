"""Record what `evalkit demo` prints as evalkit's reference (evalkit/demo_assets/reference.json).

    python scripts/demo_reference.py "2-core Intel Xeon (AVX-512, AMX)"   # the machine, in words

Run it after a change to the demo's recipe (the base, the candidates' training, the suites), with
the shipped base rebuilt and reshipped if its recipe changed. It runs the demo on a fresh work folder
(kernels pinned, as `evalkit demo` always runs the tiny base) and writes the adapters' hashes and the
table's figures; the demo compares every later run with them and says in one line when a machine
gives other figures. Check the figures on a second CPU kind before shipping them (the qemu test in
tests/train/test_pinned_kernels.py is the cheap proxy).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    from evalkit._util.repro import pinned_env
    from evalkit.demo import CANDIDATES, write_reference

    with tempfile.TemporaryDirectory(prefix="demo-reference-") as tmp:
        out, work = Path(tmp) / "out", Path(tmp) / "work"
        cmd = [sys.executable, "-m", "evalkit.cli", "demo", "--out", str(out), "--work", str(work), "--no-progress"]
        subprocess.run(cmd, env=pinned_env(), check=True)
        summary = json.loads((out / "summary.json").read_text())
        path = write_reference(summary, {name: work / name for name in CANDIDATES}, machine=sys.argv[1])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
