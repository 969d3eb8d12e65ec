# Sourced by tools/dist_train.sh, dist_test.sh, slurm_train.sh and slurm_test.sh.

# The project's Python: $PYTHON if set, else the virtual environment tools/install.sh
# makes ($GREENMIM_VENV, default .venv next to tools/), else python3 on the PATH.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    PYTHON="${GREENMIM_VENV:-$ROOT/.venv}/bin/python"
    [ -x "$PYTHON" ] || PYTHON=python3
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# torchrun_tool TOOL ARGS...: tools/TOOL in $GPUS processes per node with torchrun
# (NNODES, NODE_RANK, MASTER_ADDR, PORT from the environment, as upstream). torchrun
# ends a failed run with a long report of its own: the workers' first one-line
# "error: ..." is repeated after it, as the last line, and the exit status is the
# failed worker's (2: a mistake in the input, see greenmim_cli/exits.py), not
# torchrun's 1. stderr goes through tee for that; stdout goes straight to fd 3, a copy
# of our stdout.
torchrun_tool() {
    local tool=$1
    shift
    ERRORS=$(mktemp)
    trap 'rm -f "$ERRORS"' EXIT
    exec 3>&1
    "$PYTHON" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" \
        --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --nproc_per_node="$GPUS" \
        --master_port="${PORT:-29500}" \
        "$ROOT/tools/$tool" "$@" \
        2>&1 1>&3 3>&- | tee "$ERRORS" >&2
    local status=${PIPESTATUS[0]} code
    if [ "$status" -ne 0 ]; then
        grep -m1 '^error: ' "$ERRORS" >&2
        code=$(sed -n 's/^ *exitcode *: *\([0-9][0-9]*\).*/\1/p' "$ERRORS" | head -n1)
        if [ -n "$code" ] && [ "$code" -ne 0 ]; then status=$code; fi
    fi
    return "$status"
}

# srun_tool TOOL ARGS...: tools/TOOL on Slurm with srun, --launcher slurm (PARTITION and
# JOB_NAME set by the caller; GPUS (default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5),
# SRUN_ARGS from the environment, as upstream).
srun_tool() {
    local tool=$1
    shift
    local per_node=${GPUS_PER_NODE:-8}
    set -x
    # shellcheck disable=SC2086  # SRUN_ARGS is a list of srun options
    srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$per_node" \
        --ntasks="${GPUS:-8}" --ntasks-per-node="$per_node" \
        --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
        "$PYTHON" -u "$ROOT/tools/$tool" "$@" --launcher=slurm
}
