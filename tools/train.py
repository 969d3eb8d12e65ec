"""Train a model from a config: GreenMIM pretraining (mmpretrain scope), ImageNet
fine-tuning (mmpretrain) or COCO Mask R-CNN (mmdet). Flags follow mmpretrain/mmdet.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--amp-dtype float16|bfloat16]
                                 [--resume [CKPT]] [--data-root DIR] [--auto-scale-lr]
                                 [--cfg-options k=v ...] [--debug]

A mistake in the input ends with one line, ``error: <problem>; <fix>``, and exit code
2 (:mod:`greenmim_mm.engine.errors` lists the codes). The logic is
:mod:`greenmim_mm.engine.launch` (``prepare_train``, ``train``).
"""
import greenmim_mm  # noqa: F401  (registers modules, applies compat fixes)
from greenmim_mm.engine.errors import run_tool
from greenmim_mm.engine.launch import prepare_train, train


def main() -> None:
    train(prepare_train())


if __name__ == '__main__':
    run_tool(main)
