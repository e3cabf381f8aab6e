#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with PyTorch, the backend and the test
# tools, then (unless --no-demo) `track4dgen demo`.
#
# PyTorch is installed first and pinned (torch==2.13.0) so nothing later swaps it: on machines
# without an NVIDIA GPU set TRACK4DGEN_TORCH_INDEX=https://download.pytorch.org/whl/cpu where that
# index is reachable (pip otherwise takes the default wheel; on our CI machines that is a local CPU
# wheel). With an NVIDIA GPU the default CUDA wheel and gsplat are installed.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DEMO=1
for arg in "$@"; do
  case "$arg" in
    --no-demo) RUN_DEMO=0 ;;
    *) echo "usage: scripts/setup.sh [--no-demo]" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ is required"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip

TORCH_ARGS=(torch==2.13.0)
if [ -n "${TRACK4DGEN_TORCH_INDEX:-}" ]; then TORCH_ARGS+=(--index-url "$TRACK4DGEN_TORCH_INDEX"); fi
$PIP install -q "${TORCH_ARGS[@]}"

EXTRAS="dev"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then EXTRAS="dev,gpu"; fi
$PIP install -q -e ".[$EXTRAS]"
.venv/bin/python -c "import torch, track4dgen; print('track4dgen', track4dgen.__version__, '| torch', torch.__version__, '| cuda', torch.cuda.is_available())"

if [ "$RUN_DEMO" = 1 ]; then
  .venv/bin/track4dgen demo --out demo_output
fi
