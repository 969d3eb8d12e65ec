"""Train a model from a config: GreenMIM pretraining (mmpretrain scope), ImageNet
fine-tuning (mmpretrain) or COCO Mask R-CNN (mmdet). Flags follow mmpretrain/mmdet.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
                                 [--auto-scale-lr] [--cfg-options k=v ...]
"""
import argparse
import os
import sys

import torch.distributed as torch_dist
from mmengine.config import DictAction

import greenmim_mm  # noqa: F401  (registers modules, applies compat fixes)
from greenmim_mm.engine.launch import (UsageError, default_work_dir, load_config,
                                       require_file, setup_distributed)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or from the latest checkpoint '
        'in the work dir when no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic-mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the real batch size over the '
                        "config's auto_scale_lr.base_batch_size")
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate checkpoints during training')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, e.g. model.backbone.arch=tiny')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def merge_args(cfg, args):
    """Apply the command-line flags to the config (mmpretrain's train.py rules)."""
    cfg.launcher = args.launcher
    cfg.work_dir = default_work_dir(cfg, args.config, args.work_dir)
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise UsageError(f'--amp is not supported with {optim_wrapper}')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise UsageError('--auto-scale-lr needs auto_scale_lr.base_batch_size '
                             'in the config')
        cfg.auto_scale_lr.enable = True
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        require_file(args.resume, 'checkpoint to resume from')
        cfg.resume, cfg.load_from = True, args.resume
    require_file(cfg.get('load_from'), 'load_from checkpoint')
    return cfg


def main() -> None:
    args = parse_args()
    try:
        cfg = merge_args(load_config(args.config, args.cfg_options), args)
        setup_distributed(cfg, args.launcher)
    except UsageError as error:
        sys.exit(f'error: {error}')

    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = (Runner.from_cfg(cfg) if 'runner_type' not in cfg
              else RUNNERS.build(cfg))
    runner.train()
    if torch_dist.is_initialized():  # a gloo group left to interpreter exit can abort
        torch_dist.destroy_process_group()


if __name__ == '__main__':
    main()
