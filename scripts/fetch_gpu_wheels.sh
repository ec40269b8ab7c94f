#!/usr/bin/env bash
# Download, on a machine with internet access, the wheels that a GPU machine without a package
# registry lacks into .whl/ (git-ignored locally), for `scripts/gpu_session.sh` (copy .whl/ along).
# The GPU image it was prepared for has Python 3.12, torch, numpy, safetensors, h5py, tqdm, matplotlib, imageio, markdown,
# cloudpickle and typing-extensions; it lacks ale-py, gymnasium and farama-notifications.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    ale-py==0.12.1 gymnasium==1.4.0 farama-notifications==0.0.6
ls -l .whl
