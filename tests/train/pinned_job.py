"""One reproducibility job, run in a child process by test_pinned_kernels: build a small base by the
demo recipe, train a short QLoRA adapter on it through evalkit's trainer, and print the sha256 of
both weight files as JSON. ``python -m tests.train.pinned_job OUT [STEPS]`` from the repository root.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(out: Path, steps: int) -> dict[str, str]:
    from evalkit.demo_model import build_base, extraction_examples
    from evalkit.train import TrainConfig, train

    base = build_base(out / "base", steps=6, seed=1, hidden=64, layers=2, progress=False)
    data = out / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": x["messages"]}) + "\n" for x in extraction_examples(48, seed=3)))
    cfg = TrainConfig(base=str(base), train=str(data), val_fraction=0.0, quantize="nf4", dtype="float32", seed=7,
                      lora={"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
                      lr=4e-3, max_steps=steps, batch_size=8, warmup_ratio=0.0)
    adapter = train(cfg, out / "adapter", progress=False).adapter_dir
    return {"base": sha(base / "model.safetensors"), "adapter": sha(adapter / "adapter_model.safetensors")}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 4)))
