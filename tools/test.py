"""Evaluate a checkpoint with the config's test loop and metrics (top-1 accuracy in
mmpretrain scope, COCO box/mask AP through mmdet's ``CocoMetric`` in mmdet scope).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out RESULTS.pkl]
                                           [--show-dir DIR] [--cfg-options k=v ...]

The logic is :mod:`greenmim_mm.engine.launch` (``prepare_test``, ``evaluate``).
"""
import sys

import greenmim_mm  # noqa: F401  (registers modules, applies compat fixes)
from greenmim_mm.engine.launch import UsageError, evaluate, prepare_test


def main() -> None:
    try:
        cfg, out_file = prepare_test()
    except UsageError as error:
        sys.exit(f'error: {error}')
    evaluate(cfg, out_file)


if __name__ == '__main__':
    main()
