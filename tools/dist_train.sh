#!/usr/bin/env bash
# Distributed training with torchrun: tools/dist_train.sh CONFIG GPUS [train.py args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT from the environment, as upstream.
# Without GPUs, GPUS CPU processes train over gloo.
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [tools/train.py arguments]   (e.g. $0 configs/pretrain/greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py 8)" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
if [ ! -f "$CONFIG" ]; then
    echo "error: config file not found: $CONFIG" >&2
    exit 2
fi

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
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}" \
    2>&1 1>&3 3>&- | tee "$ERRORS" >&2
STATUS=${PIPESTATUS[0]}
if [ $STATUS -ne 0 ]; then grep -m1 '^error: ' "$ERRORS" >&2; fi
exit $STATUS
