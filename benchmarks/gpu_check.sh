#!/usr/bin/env bash
# The device check, from the repo root: the wheels in .whl/ (benchmarks/gpu_wheels.txt) go into a folder of their own,
# first on PYTHONPATH; its name holds "site-packages" (datasets pickles modules found elsewhere by value, and fails).
set -euo pipefail; site="${TMPDIR:-/tmp}/prefloop-gpu-check/site-packages"
if [ -d .whl ]; then python3 -m pip install -q --upgrade --no-index --no-deps --target "$site" .whl/*.whl && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"; fi
PYTHONUNBUFFERED=1 exec python3 benchmarks/gpu_check.py "$@"
