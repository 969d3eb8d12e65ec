#!/usr/bin/env bash
# The one install path of greenmim_mm (README, Makefile and CI all call it).
#
#   bash tools/install.sh            # creates ./.venv and installs everything
#
# 1. a project-local virtual environment (GREENMIM_VENV, default ./.venv);
# 2. torch 2.14.1 + torchvision 0.29.1 (they run on the CPU too);
# 3. mmcv 2.1.0 WITH its compiled ops: a matching prebuilt wheel from
#    ../shared/wheels or the local cache (GREENMIM_WHEEL_CACHE), else built from
#    source against the installed torch (C++20, --no-build-isolation,
#    setuptools < 81; about 11 minutes on 2 cores) and cached for next time;
# 4. mmengine, mmpretrain, mmdet, the test tools and greenmim_mm (editable).
# Re-running it on a set-up machine takes seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${GREENMIM_VENV:-$ROOT/.venv}
WHEEL_CACHE=${GREENMIM_WHEEL_CACHE:-$HOME/.cache/greenmim_mm/wheels}
SHARED_WHEELS=${GREENMIM_SHARED_WHEELS-$ROOT/../shared/wheels}  # set empty to skip
CONSTRAINTS=$ROOT/requirements/constraints.txt
MMCV_VERSION=2.1.0
PY=$VENV/bin/python

say() { echo "[install] $*"; }
# (this machine's pip config names local indexes that may be absent: hide those warnings)
pip_install() {
    "$PY" -m pip install --disable-pip-version-check -q -c "$CONSTRAINTS" "$@" \
        2> >(grep -v "^WARNING: Location 'file:" >&2)
}

# What the installed environment was made from: re-running with the same inputs is a no-op.
stamp_inputs() { cat "$0" "$ROOT/setup.py" "$ROOT"/requirements/*.txt | sha256sum | cut -d' ' -f1; }
STAMP=$VENV/.greenmim_install_stamp
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_inputs)" ] &&
   "$PY" -c 'import mmcv.ops, mmdet, mmpretrain, greenmim_mm' 2>/dev/null; then
    say "environment $VENV is up to date"
    exit 0
fi

if [ ! -x "$PY" ]; then
    say "creating the virtual environment $VENV"
    python3 -m venv "$VENV"
fi
say "pip, setuptools < 81 (mmcv's setup.py imports pkg_resources), wheel"
pip_install -U pip setuptools wheel

say "torch and torchvision (a minute or two the first time: several GB of wheels)"
pip_install torch torchvision

say "mmengine (mmcv imports it, so it comes first)"
pip_install mmengine

mmcv_has_ops() { "$PY" - <<'EOF' 2>/dev/null
import torch
from mmcv.ops import nms
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
EOF
}

build_mmcv() {
    local src log start
    src=$(mktemp -d)
    log=$src/build.log
    say "no mmcv $MMCV_VERSION wheel matches this torch: building it from source with"
    say "its compiled ops. This takes about 11 minutes on 2 cores; progress below."
    pip_install ninja psutil  # ninja compiles in parallel
    "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
        -d "$src" "mmcv==$MMCV_VERSION"
    tar -xzf "$src/mmcv-$MMCV_VERSION.tar.gz" -C "$src"
    # torch >= 2.14 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$src/mmcv-$MMCV_VERSION/setup.py"
    mkdir -p "$WHEEL_CACHE"
    start=$(date +%s)
    (cd "$src/mmcv-$MMCV_VERSION" &&
        MMCV_WITH_OPS=1 MAX_JOBS=$(nproc) "$PY" -m pip wheel -v --no-deps \
            --no-build-isolation --no-cache-dir -w "$WHEEL_CACHE" . >"$log" 2>&1) &
    local pid=$!
    local sources
    sources=$(ls "$src/mmcv-$MMCV_VERSION"/mmcv/ops/csrc/pytorch/{,cpu/}*.cpp | wc -l)
    while kill -0 "$pid" 2>/dev/null; do
        sleep 30
        say "  building mmcv: $(find "$src" -name '*.o' | wc -l) of $sources sources" \
            "compiled, $(( $(date +%s) - start )) s elapsed (log: $log)"
    done
    if ! wait "$pid"; then
        tail -n 30 "$log" >&2
        say "ERROR: the mmcv build failed; the full log is $log" >&2
        exit 1
    fi
    say "mmcv built in $(( $(date +%s) - start )) s and cached in $WHEEL_CACHE"
}

if mmcv_has_ops; then
    say "mmcv with compiled ops is already installed"
else
    find_links=()
    for dir in "$SHARED_WHEELS" "$WHEEL_CACHE"; do
        [ -d "$dir" ] && find_links+=(--find-links "$dir")
    done
    if [ ${#find_links[@]} -gt 0 ] &&
       pip_install --no-index --no-deps --force-reinstall "${find_links[@]}" "mmcv==$MMCV_VERSION" 2>/dev/null &&
       mmcv_has_ops; then
        say "mmcv $MMCV_VERSION installed from a prebuilt wheel"
    else
        "$PY" -m pip uninstall -q -y mmcv 2>/dev/null || true
        build_mmcv
        pip_install --no-index --no-deps --force-reinstall --find-links "$WHEEL_CACHE" "mmcv==$MMCV_VERSION"
        mmcv_has_ops || { say "ERROR: mmcv installed but its ops do not load" >&2; exit 1; }
    fi
fi

say "mmengine, mmpretrain, mmdet, test tools and greenmim_mm (editable)"
pip_install -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt"
editable_log=$(mktemp)
pip_install --no-build-isolation -e "$ROOT" >"$editable_log" 2>&1 || { cat "$editable_log" >&2; exit 1; }

"$PY" -c 'import mmcv.ops, mmdet, mmpretrain, greenmim_mm' 
stamp_inputs >"$STAMP"
say "done: activate with 'source $VENV/bin/activate'"
