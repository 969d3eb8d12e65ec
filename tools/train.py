"""Train a model from a config: GreenMIM pretraining (mmpretrain scope), ImageNet
fine-tuning (mmpretrain) or COCO Mask R-CNN (mmdet). Flags follow mmpretrain/mmdet.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
                                 [--auto-scale-lr] [--cfg-options k=v ...]

The logic is :mod:`greenmim_mm.engine.launch` (``prepare_train``, ``train``).
"""
import sys

import greenmim_mm  # noqa: F401  (registers modules, applies compat fixes)
from greenmim_mm.engine.launch import UsageError, prepare_train, train


def main() -> None:
    try:
        cfg = prepare_train()
    except UsageError as error:
        sys.exit(f'error: {error}')
    train(cfg)


if __name__ == '__main__':
    main()
