#!/usr/bin/env bash
# Distributed testing with torchrun: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT from the environment, as upstream.
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py arguments]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
for f in "$CONFIG" "$CHECKPOINT"; do
    if [ ! -f "$f" ]; then echo "error: file not found: $f" >&2; exit 2; fi
done

# torchrun ends a failed run with a long report of its own: repeat the workers' first
# one-line "error: ..." (a bad argument) after it, as the last line. stderr goes
# through tee for that; stdout goes straight to fd 3, a copy of our stdout.
ERRORS=$(mktemp)
trap 'rm -f "$ERRORS"' EXIT
exec 3>&1
PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH} \
python -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    "$(dirname "$0")/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}" \
    2>&1 1>&3 3>&- | tee "$ERRORS" >&2
STATUS=${PIPESTATUS[0]}
if [ $STATUS -ne 0 ]; then grep -m1 '^error: ' "$ERRORS" >&2; fi
exit $STATUS
