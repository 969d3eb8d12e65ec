#!/usr/bin/env bash
# The GPU check on a bare, offline CUDA machine (Python 3.12 + torch only).
#
#   tools/gpu_check.sh --prepare DIR     on a machine with the package index: download the
#                                        wheels of requirements/gpu_check.txt into DIR
#   tools/gpu_check.sh DIR [OPTIONS]     on the GPU machine: install them from DIR into a
#                                        temp dir on PYTHONPATH, run the CUDA tests and the
#                                        benchmark matrix, write one markdown table
#   tools/gpu_check.sh --smoke --device cpu [OPTIONS]   the same path on a CPU, tiny models
#
# OPTIONS are those of `python -m greenmim_lab.benchmarking.gpu_check` (--out PATH,
# default work_dirs/gpu_check.md; --budget-s; --skip-tests). PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [[ "${1:-}" == "--prepare" ]]; then
    dir=${2:?usage: tools/gpu_check.sh --prepare DIR}
    exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$dir" -r requirements/gpu_check.txt
fi
if [[ $# -gt 0 && "$1" != -* ]]; then
    dir=$1
    shift
    compgen -G "$dir/*.whl" >/dev/null || {
        echo "error: no wheels in $dir: run tools/gpu_check.sh --prepare $dir first" >&2
        exit 2
    }
    site=$(mktemp -d)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$dir"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # greenmim_mm: this source tree
exec "$PY" -m greenmim_lab.benchmarking.gpu_check "$@"
