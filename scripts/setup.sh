#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv on a fresh machine.
# Idempotent: a second run only checks that everything is installed.
#
# Why not just `pip install -e .`: lava-nc 0.10.0 declares Python <3.11 and numpy<2. On 3.11 it
# installs with --ignore-requires-python next to numpy<2 / scipy<1.16, and lava_procs/lava_compat.py
# makes it importable (see docs/install.md). torch is pinned to the CPU build 2.13.0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install torch==2.13.0
"${PIP[@]}" install -e ".[test,docs,sweep]"
"${PIP[@]}" install --ignore-requires-python lava-nc==0.10.0 "numpy<2" "scipy<1.16"
# lava-dl (netx: the hdf5 network format Lava loads for Loihi 2) declares Python <3.11 and would
# replace torch/numpy: installed without its dependencies; lava_procs/lava_dl_compat.py stands in
# for the torchvision/OpenCV-only object-detection part it imports (docs/deploy.md).
"${PIP[@]}" install --ignore-requires-python --no-deps lava-dl==0.6.0
"$VENV/bin/python" - <<'PY'
import lava_procs
lava_procs.require_lava()
from lava_procs.lava_dl_compat import require_netx
require_netx()
import brian2, torch, nir, ale_py, gymnasium, snntorch  # noqa: F401
print(f"mstpn environment ready: torch {torch.__version__}, brian2 {brian2.__version__}, "
      f"nir {nir.__version__ if hasattr(nir, '__version__') else '?'}, ale-py {ale_py.__version__}")
PY
