#!/usr/bin/env bash
# Distributed testing with torchrun: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT from the environment, as upstream.
# Python: $PYTHON, else the project's .venv, else python3 (tools/_launch.sh).
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py arguments]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
for f in "$CONFIG" "$CHECKPOINT"; do
    if [ ! -f "$f" ]; then echo "error: file not found: $f; check the path" >&2; exit 2; fi
done
source "$(dirname "$0")/_launch.sh"
torchrun_tool test.py "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
