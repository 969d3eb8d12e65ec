"""Evaluate a checkpoint with the config's test loop and metrics (top-1 accuracy in
mmpretrain scope, COCO box/mask AP through mmdet's ``CocoMetric`` in mmdet scope).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out RESULTS.pkl]
                                           [--show-dir DIR] [--cfg-options k=v ...]
                                           [--debug]
    greenmim-test CONFIG CHECKPOINT ...  (the same where the package is installed)

A checkpoint that does not fit the config's model stops before the first image; a
mistake in the input ends with one line, ``error: <problem>; <fix>``, and exit code 2
(:mod:`greenmim_cli.exits`). The logic is :mod:`greenmim_cli.launch`
(``prepare_test``, ``evaluate``).
"""
from greenmim_cli.commands import test

if __name__ == '__main__':
    test()
