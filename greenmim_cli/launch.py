"""The logic of ``tools/train.py`` and ``tools/test.py`` (thin command lines over it):
argument parsing, config checks that fail before anything is written, distributed
set-up that also works on machines without GPUs, and the run itself.

Every check runs in :func:`prepare_train` / :func:`prepare_test`, *before* the
mmengine ``Runner`` exists, so a bad argument (a :class:`UsageError`) never leaves a
half-written work dir behind. How the tools report it (one line, exit code 2) is
:mod:`greenmim_cli.exits`; the ``--cfg-options`` checks are
:mod:`greenmim_cli.cfg_options`, the others :mod:`greenmim_cli.config_checks`.
"""
import argparse
import os
import os.path as osp
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.distributed as torch_dist
from mmengine.config import Config

import greenmim_mm  # noqa: F401  (registers the modules, applies the stack fixes)

from greenmim_mm.datasets.collate import bind_collate_backbone
from greenmim_mm.engine.amp import AMP_DTYPES, use_safe_optim_wrapper
from greenmim_mm.engine.checkpoint import use_safe_checkpoint_hook
from greenmim_mm.engine.hooks.device_runtime_info_hook import use_device_runtime_info
from greenmim_mm.engine.hooks.run_length_hook import use_run_length_hook
from greenmim_mm.errors import UsageError

from .cfg_options import merge_cfg_options
from .config_checks import (check_data_roots, check_geometry, check_schedule,
                            require_checkpoint, set_data_root)
from .exits import ArgumentParser, KeyValueAction, add_debug_flag
from .installed_configs import resolve_config

__all__ = ['evaluate', 'load_config', 'prepare_test', 'prepare_train', 'train']


def use_safe_components(cfg: Config, amp: bool = False,
                        amp_dtype: Optional[str] = None) -> None:
    """mmengine's checkpoint hook and optim wrappers as their safe subclasses here
    (same arguments): crash-safe checkpoints, non-finite steps skipped, AMP on any
    device (``amp``/``amp_dtype``: ``--amp``/``--amp-dtype``); and the training
    scalars read once per logging interval (:class:`DeviceRuntimeInfoHook`)."""
    use_safe_checkpoint_hook(cfg)
    use_device_runtime_info(cfg)
    use_safe_optim_wrapper(cfg, amp, amp_dtype)
    use_run_length_hook(cfg)  # a resume with another length follows the new schedule


def load_config(path: str, cfg_options: Optional[Dict[str, Any]] = None,
                amp: bool = False, amp_dtype: Optional[str] = None) -> Config:
    """Read a config, run it with :func:`use_safe_components` and merge
    ``--cfg-options`` (checked first: no typo of a key, no key nothing reads, no text
    for a number); then bind ``greenmim_collate`` to the model's backbone (one source
    of geometry)."""
    path = resolve_config(path)
    try:
        cfg = Config.fromfile(path)
    except (SyntaxError, NameError, FileNotFoundError) as error:
        raise UsageError(f'cannot read the config {path}: {type(error).__name__}: '
                         f'{error}; fix the file') from error
    use_safe_components(cfg, amp, amp_dtype)  # first: their own arguments are accepted
    merge_cfg_options(cfg, cfg_options)
    use_safe_components(cfg, amp, amp_dtype)  # the types --cfg-options may have set
    bind_collate_backbone(cfg)
    return cfg


def default_work_dir(cfg: Config, config_path: str, work_dir: Optional[str]) -> str:
    """CLI > config > ``./work_dirs/<config name>``, as in mmpretrain/mmdet."""
    if work_dir is not None:
        return work_dir
    if cfg.get('work_dir') is not None:
        return cfg.work_dir
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def setup_distributed(cfg: Config, launcher: str) -> None:
    """Make ``launcher='pytorch'`` (torchrun) work on CPU-only machines too.

    mmengine initialises the process group with ``torch.cuda.set_device`` and wraps the
    model in DDP with ``device_ids=[LOCAL_RANK]``; both fail without a GPU. On such a
    machine we initialise a gloo group ourselves (mmengine then skips its own
    ``init_dist``) and build the DDP wrapper with ``device_ids=None``.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if not torch_dist.is_initialized():
        if launcher != 'pytorch':
            raise UsageError(f'--launcher {launcher} needs GPUs; on a CPU-only '
                             'machine use tools/dist_train.sh (torchrun, gloo)')
        torch_dist.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    os.environ.setdefault('LOCAL_RANK', '0')


# ----------------------------------------------------------------------------------
# tools/train.py
# ----------------------------------------------------------------------------------
def _add_common_args(parser: argparse.ArgumentParser, cfg_example: str) -> None:
    parser.add_argument(
        '--cfg-options', nargs='+', action=KeyValueAction,
        help=f'override settings of the config, e.g. {cfg_example}')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument(
        '--verbose', action='store_true',
        help="print everything mmengine logs (environment, config, hook table, "
        "optimizer settings per parameter); they always go to the run's log file")
    add_debug_flag(parser)


def train_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/train.py`` (mmpretrain/mmdet flags)."""
    parser = ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path, or an installed config: '
                        'greenmim_mm::pretrain/NAME.py')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or from the latest checkpoint '
        'in the work dir when no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: bfloat16 on the CPU and on GPUs that '
                        'support it, float16 on older GPUs')
    parser.add_argument('--amp-dtype', choices=AMP_DTYPES,
                        help='mixed precision in this dtype (implies --amp)')
    parser.add_argument('--data-root',
                        help='folder of the training data (train_dataloader.dataset.'
                        'data_root), e.g. your own images for the *_folder configs')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the batch of one update (GPUs x batch '
                        "per GPU x --accumulate) over the config's "
                        'auto_scale_lr.base_batch_size')
    parser.add_argument('--accumulate', type=int, metavar='K',
                        help='accumulate the gradients of K batches in one update '
                        '(optim_wrapper.accumulative_counts): e.g. the paper\'s 2048 '
                        'images on 2 GPUs x 256 with --accumulate 4')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate checkpoints during training')
    _add_common_args(parser, 'model.backbone.arch=tiny')
    return parser


def merge_train_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command-line flags to the config (mmpretrain's train.py rules)."""
    cfg.launcher = args.launcher
    cfg.work_dir = default_work_dir(cfg, args.config, args.work_dir)
    if args.data_root is not None:
        set_data_root(cfg, args.data_root)
    if args.accumulate is not None:
        set_accumulation(cfg, args.accumulate)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise UsageError('--auto-scale-lr needs auto_scale_lr.base_batch_size in '
                             'the config; set it with --cfg-options '
                             'auto_scale_lr.base_batch_size=N')
        cfg.auto_scale_lr.enable = True
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        require_checkpoint(args.resume, 'checkpoint to resume from',
                           '--resume without a file resumes from the newest complete '
                           'checkpoint of the work dir')
        cfg.resume, cfg.load_from = True, args.resume
    require_checkpoint(cfg.get('load_from'), 'load_from checkpoint')
    check_schedule(cfg)
    check_geometry(cfg)
    check_data_roots(cfg, ['train_dataloader'] + ([] if args.no_validate or
                                                  not cfg.get('val_cfg') else
                                                  ['val_dataloader']))
    return cfg


def set_accumulation(cfg: Config, counts: int) -> None:
    """``--accumulate K``: ``optim_wrapper.accumulative_counts = K``."""
    if counts < 1:
        raise UsageError(f'--accumulate {counts}: an update needs at least one batch; '
                         'give K >= 1 (1: no accumulation)')
    if not isinstance(cfg.get('optim_wrapper'), dict):
        raise UsageError('--accumulate needs an optim_wrapper in the config; add one or '
                         'train without --accumulate')
    cfg.optim_wrapper.accumulative_counts = counts


def _parse(parser: argparse.ArgumentParser,
           argv: Optional[Sequence[str]]) -> argparse.Namespace:
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def _merge_console_args(cfg: Config, args: argparse.Namespace) -> Config:
    """``--verbose``: mmengine's full terminal (see :mod:`greenmim_cli.console`)."""
    if args.verbose:
        cfg.console_log = 'full'
    return cfg


def prepare_train(argv: Optional[Sequence[str]] = None) -> Config:
    """Parse ``tools/train.py``'s arguments into the config to train with.

    Raises:
        UsageError: a bad argument, before anything is written.
    """
    args = _parse(train_parser(), argv)
    cfg = merge_train_args(
        load_config(args.config, args.cfg_options, args.amp, args.amp_dtype), args)
    _merge_console_args(cfg, args)
    setup_distributed(cfg, args.launcher)
    return cfg


def _build_runner(cfg: Config):
    """The runner, with a quiet terminal and the run report (header, final block)."""
    from .run_report import build_runner
    return build_runner(cfg)


def _end_distributed() -> None:
    """Tear the process group down together: a gloo group left to interpreter exit, or
    destroyed by one process while another still works in it, can abort the process
    ("terminate called without an active exception", seen under load)."""
    if torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def train(cfg: Config) -> None:
    """Train with mmengine's ``Runner`` (a config from :func:`prepare_train`)."""
    _build_runner(cfg).train()
    _end_distributed()


# ----------------------------------------------------------------------------------
# tools/test.py
# ----------------------------------------------------------------------------------
def evaluation_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/test.py`` (mmpretrain/mmdet flags)."""
    parser = ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path, or an installed config: '
                        'greenmim_mm::classification/NAME.py')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation logs')
    parser.add_argument('--out', help='dump the predictions to this pickle file')
    parser.add_argument('--show-dir', help='save drawn predictions to this folder '
                        '(relative to the timestamped log folder in the work dir)')
    _add_common_args(parser, 'test_dataloader.batch_size=1')
    return parser


def merge_test_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command-line flags to the config (mmpretrain/mmdet test.py rules)."""
    require_checkpoint(args.checkpoint, 'checkpoint')
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise UsageError(f'--out must name a .pkl file, got {args.out}; e.g. '
                         '--out results.pkl')
    if cfg.get('test_dataloader') is None:
        raise UsageError(f'{args.config} has no test_dataloader to evaluate with; test '
                         'with a fine-tuning config (classification/ or detection/)')
    check_data_roots(cfg, ['test_dataloader'])
    cfg.launcher = args.launcher
    cfg.work_dir = default_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = args.checkpoint
    if args.show_dir is not None:
        visualization = cfg.get('default_hooks', {}).get('visualization')
        if visualization is None:
            raise UsageError('--show-dir needs default_hooks.visualization in the '
                             'config; add a visualization hook or drop --show-dir')
        if cfg.get('default_scope') == 'mmdet':  # mmdet's DetVisualizationHook
            visualization.update(draw=True, test_out_dir=args.show_dir)
        else:  # mmpretrain's VisualizationHook
            visualization.update(enable=True, out_dir=args.show_dir)
    return cfg


def prepare_test(argv: Optional[Sequence[str]] = None) -> Tuple[Config, Optional[str]]:
    """Parse ``tools/test.py``'s arguments into the config to evaluate with and the
    ``--out`` file (or None).

    Raises:
        UsageError: a bad argument, before anything is written.
    """
    args = _parse(evaluation_parser(), argv)
    cfg = merge_test_args(load_config(args.config, args.cfg_options), args)
    _merge_console_args(cfg, args)
    setup_distributed(cfg, args.launcher)
    return cfg, args.out


def _dump_metric(cfg: Config, out_file: str):
    """The metric that writes raw predictions: mmdet's encodes masks as RLE."""
    if cfg.get('default_scope') == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out_file)
    from mmengine.evaluator import DumpResults
    return DumpResults(out_file_path=out_file)


def evaluate(cfg: Config, out_file: Optional[str] = None) -> None:
    """Evaluate with mmengine's ``Runner`` (what :func:`prepare_test` returns);
    ``out_file``: also dump every prediction to this pickle file."""
    runner = _build_runner(cfg)
    if out_file is not None:
        runner.test_evaluator.metrics.append(_dump_metric(cfg, out_file))
    runner.test()
    _end_distributed()
