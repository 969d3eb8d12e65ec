"""Evaluate a checkpoint with the config's test loop and metrics (top-1 accuracy in
mmpretrain scope, COCO box/mask AP through mmdet's ``CocoMetric`` in mmdet scope).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out RESULTS.pkl]
                                           [--show-dir DIR] [--cfg-options k=v ...]
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
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation logs')
    parser.add_argument('--out', help='dump the predictions to this pickle file')
    parser.add_argument('--show-dir', help='save drawn predictions to this folder '
                        '(relative to the timestamped log folder in the work dir)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, e.g. test_dataloader.batch_size=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def merge_args(cfg, args):
    """Apply the command-line flags to the config (mmpretrain/mmdet test.py rules)."""
    require_file(args.checkpoint, 'checkpoint')
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise UsageError(f'--out must name a .pkl file, got {args.out}')
    if cfg.get('test_dataloader') is None:
        raise UsageError(f'{args.config} has no test_dataloader to evaluate with')
    cfg.launcher = args.launcher
    cfg.work_dir = default_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = args.checkpoint
    if args.show_dir is not None:
        visualization = cfg.get('default_hooks', {}).get('visualization')
        if visualization is None:
            raise UsageError('--show-dir needs default_hooks.visualization in the config')
        if cfg.get('default_scope') == 'mmdet':  # mmdet's DetVisualizationHook
            visualization.update(draw=True, test_out_dir=args.show_dir)
        else:  # mmpretrain's VisualizationHook
            visualization.update(enable=True, out_dir=args.show_dir)
    return cfg


def dump_metric(cfg, out_file: str):
    """The metric that writes raw predictions: mmdet's encodes masks as RLE."""
    if cfg.get('default_scope') == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out_file)
    from mmengine.evaluator import DumpResults
    return DumpResults(out_file_path=out_file)


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
    if args.out is not None:
        runner.test_evaluator.metrics.append(dump_metric(cfg, args.out))
    runner.test()
    if torch_dist.is_initialized():  # a gloo group left to interpreter exit can abort
        torch_dist.destroy_process_group()


if __name__ == '__main__':
    main()
