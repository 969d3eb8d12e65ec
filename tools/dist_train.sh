#!/usr/bin/env bash
# Distributed training with torchrun: tools/dist_train.sh CONFIG GPUS [train.py args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT from the environment, as upstream.
# Without GPUs, GPUS CPU processes train over gloo. Python: $PYTHON, else the
# project's .venv, else python3 (tools/_launch.sh).
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [tools/train.py arguments]   (e.g. $0 configs/pretrain/greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py 8)" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
if [ ! -f "$CONFIG" ]; then
    echo "error: config file not found: $CONFIG; give the path of a .py file under configs/" >&2
    exit 2
fi
source "$(dirname "$0")/_launch.sh"
torchrun_tool train.py "$CONFIG" --launcher pytorch "${@:3}"
