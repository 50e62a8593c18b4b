#!/usr/bin/env bash
# GPU figures on a machine with a GPU, no internet and only torch, transformers, peft and accelerate:
# installs the project's pinned wheels from wheels/ (filled by `make wheels` on a machine that reaches the
# package index, then carried with the tree), then runs benchmarks/gpu_check.py. Arguments go to the script.
#   bash benchmarks/gpu_check.sh [--steps 3] [--configs bf16-lora qlora fp16-lora] [--json out.json]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-wheels}
SITE=${SITE:-/tmp/chartrl-site}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  # --target: beside the machine's own packages, never over them; PYTHONPATH puts these first.
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "No wheels in $WHEELS/: using the installed packages (make wheels fills it)."
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
# This package runs from the tree (first on PYTHONPATH), so the figures are those of the code checked out.
"$PY" -c "import torch, transformers, trl, peft, accelerate, datasets as d
print('versions:', ', '.join(f'{m.__name__} {m.__version__}' for m in (torch, transformers, trl, peft, accelerate, d)))"
"$PY" -c "import bitsandbytes" 2>/dev/null ||
    echo "warning: bitsandbytes does not import: the 4-bit configuration will fail"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
exec "$PY" benchmarks/gpu_check.py "$@"
