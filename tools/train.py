"""Train a model from a config: GreenMIM pretraining (mmpretrain scope), ImageNet
fine-tuning (mmpretrain) or COCO Mask R-CNN (mmdet). Flags follow mmpretrain/mmdet.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--amp-dtype float16|bfloat16]
                                 [--resume [CKPT]] [--data-root DIR] [--auto-scale-lr]
                                 [--cfg-options k=v ...] [--debug]
    greenmim-train CONFIG ...    (the same where the package is installed; CONFIG may
                                  be an installed one: greenmim_mm::pretrain/NAME.py)

A mistake in the input ends with one line, ``error: <problem>; <fix>``, and exit code
2 (:mod:`greenmim_cli.exits` lists the codes). The logic is
:mod:`greenmim_cli.launch` (``prepare_train``, ``train``).
"""
from greenmim_cli.commands import train

if __name__ == '__main__':
    train()
