"""Show that GreenMIM pretraining learns: GreenMIM vs SimMIM vs random initialisation,
the same CPU-time budget for both pretrainings, fine-tuned on a few-shot task of the
same synthetic scenes. See docs/learning_signal.md.

    python tools/learning_signal.py                  # the full experiment (~40 min, 2 cores)
    python tools/learning_signal.py --quick --out-dir /tmp/ls   # the pipeline in seconds

The last line printed reads, e.g.
    learning signal (top-1, 5 seeds): greenmim=0.812+-0.010 simmim=0.790+-0.012 random=0.640+-0.020
"""
import os

os.environ.setdefault('OMP_NUM_THREADS', '1')  # before torch: one thread per process

import argparse  # noqa: E402
import os.path as osp  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from dataclasses import fields  # noqa: E402
from typing import List, Optional  # noqa: E402

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # greenmim_lab (not installed)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from greenmim_lab.experiments.learning_signal import QUICK, Settings

    parser = argparse.ArgumentParser(
        description='GreenMIM vs SimMIM vs random init at equal pretraining CPU time')
    defaults = Settings()
    helps = dict(
        out_dir='where results, logs, configs and checkpoints go',
        data_dir='where the scenes are made (default: OUT_DIR/data; reused when '
        'they exist with the same settings)',
        budget_s='CPU seconds of pretraining for each method',
        seeds='fine-tuning seeds (few-shot splits) per initialisation',
        shots='labelled scenes per class for fine-tuning',
        finetune_iters='fine-tuning steps',
        finetune_batch_size='fine-tuning batch size',
        finetune_lr='fine-tuning learning rate (AdamW)',
        num_unlabelled='unlabelled scenes for pretraining',
        train_per_class='labelled pool per class that the shots are drawn from',
        test_per_class='test scenes per class',
        data_seed='seed of the scenes',
        jobs='processes at once, one thread each',
        reuse_pretraining='keep the pretraining runs already in OUT_DIR when their '
        'config is the same (only the fine-tuning runs again)',
        base_config='the tiny GreenMIM Swin config the runs derive from')
    for field in fields(Settings):
        default = getattr(defaults, field.name)
        flag = '--' + field.name.replace('_', '-')
        if isinstance(default, bool):
            parser.add_argument(flag, action='store_true', default=None,
                                help=helps[field.name])
            continue
        kind = type(default) if default is not None else str
        parser.add_argument(flag, type=kind, default=None,
                            help=f'{helps[field.name]} (default: {default})')
    parser.add_argument('--quick', action='store_true',
                        help='a tiny run that checks the pipeline end to end: '
                        + ', '.join(f'{k}={v}' for k, v in QUICK.items()))
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # mmengine
    import torch

    torch.set_num_threads(1)  # the jobs are forked from this process
    from greenmim_lab.experiments.learning_signal import QUICK, Settings, run

    args = parse_args(argv)
    values = dict(QUICK) if args.quick else {}
    values.update({field.name: getattr(args, field.name) for field in fields(Settings)
                   if getattr(args, field.name) is not None})
    try:
        settings = Settings(**values)
        settings.check()
    except ValueError as error:
        sys.exit(f'error: {error}')
    run(settings)


if __name__ == '__main__':
    main()
