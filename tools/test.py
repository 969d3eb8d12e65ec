"""Evaluate a checkpoint with the config's test loop and metrics (top-1 accuracy in
mmpretrain scope, COCO box/mask AP through mmdet's ``CocoMetric`` in mmdet scope).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out RESULTS.pkl]
                                           [--show-dir DIR] [--cfg-options k=v ...]
                                           [--debug]

A checkpoint that does not fit the config's model stops before the first image; a
mistake in the input ends with one line, ``error: <problem>; <fix>``, and exit code 2
(:mod:`greenmim_mm.engine.errors`). The logic is :mod:`greenmim_mm.engine.launch`
(``prepare_test``, ``evaluate``).
"""
import greenmim_mm  # noqa: F401  (registers modules, applies compat fixes)
from greenmim_mm.engine.errors import run_tool
from greenmim_mm.engine.launch import evaluate, prepare_test


def main() -> None:
    evaluate(*prepare_test())


if __name__ == '__main__':
    run_tool(main)
