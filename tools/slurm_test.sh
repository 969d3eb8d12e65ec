#!/usr/bin/env bash
# Testing on a Slurm cluster: tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]
# GPUS (default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS from the environment.
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [tools/test.py arguments]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
source "$(dirname "$0")/_launch.sh"  # $PYTHON: the project's .venv, else python3
srun_tool test.py "$3" "$4" "${@:5}"
