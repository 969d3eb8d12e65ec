"""The benchmark's command line (``tools/benchmark.py`` runs :func:`main`).

    python tools/benchmark.py --backbone swin --arch tiny --batch-size 8 --threads 1
    python tools/benchmark.py --backbone twins --arch small --section all
    python tools/benchmark.py --arch base --batch-size 128 256 max --device cuda --amp \\
        --attn-backend sdpa flex --compile

Sections: ``step`` (GreenMIM vs SimMIM training steps, :mod:`.runner`), ``ops``
(grouping plan and group window attention, :mod:`.grouping_attention`), ``sparse-conv``
(:mod:`.sparse_conv`), ``host`` (the training process's own time per step, loader plan
vs planning in the step, :mod:`.host`), ``loader`` (the input pipelines' CPU per image by
stage, bytes per image and cores per GPU, GreenMIM vs MAE vs SimMIM, :mod:`.loader`), or
``all``.

    python tools/benchmark.py --section loader --arch base   # make benchmark-loader
"""
import argparse
import dataclasses
import json
from typing import List, Optional, Sequence

import torch

from .comparisons import DEFAULT_ARCH, GREENMIM_CONFIGS
from .steps import StepOptions

SECTIONS = ('step', 'ops', 'sparse-conv', 'host', 'loader')


def batch_size(text: str):
    if text == 'max':
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"invalid batch size {text!r}: give a positive integer or 'max'")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='tools/benchmark.py',
        description='GreenMIM benchmarks: training steps side by side with SimMIM, '
        'core ops, sparse convs')
    parser.add_argument('--backbone', choices=sorted(GREENMIM_CONFIGS), default='swin')
    parser.add_argument('--section', choices=SECTIONS + ('all', ), default='step')
    parser.add_argument('--arch', default=None, help='arch of both models: '
                        + '; '.join(f'{b}: {", ".join(a)}' for b, a in
                                    GREENMIM_CONFIGS.items())
                        + ' (default: tiny for swin, small for twins, base for swin_v2)')
    parser.add_argument('--greenmim-config', default='',
                        help='GreenMIM config instead of the one of --arch')
    parser.add_argument('--batch-size', type=batch_size, nargs='+', default=[8],
                        help="images per step, one run per value; 'max': each model at "
                        'the largest batch that fits on the GPU (default: 8)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--amp', action='store_true', help='autocast in --amp-dtype '
                        '(AmpOptimWrapper on CUDA, torch.autocast on the CPU)')
    parser.add_argument('--amp-dtype', choices=['bfloat16', 'float16'],
                        default='bfloat16')
    parser.add_argument('--compile', action='store_true',
                        help="torch.compile(model.train_step), as mmengine's compile=True")
    parser.add_argument('--compile-backend', default='inductor',
                        help="torch.compile backend (default: inductor; 'eager' only "
                        'traces)')
    parser.add_argument('--compile-mode', default=None,
                        choices=['default', 'reduce-overhead', 'max-autotune'],
                        help="torch.compile mode ('reduce-overhead': CUDA graphs, which "
                        'the static shapes of the visible path allow)')
    parser.add_argument('--attn-backend', choices=['sdpa', 'flex'], nargs='+',
                        default=['sdpa'], help="GreenMIM's group attention backend; "
                        'several: one GreenMIM model each, side by side')
    parser.add_argument('--steps', type=int, default=10, help='timed steps per model')
    parser.add_argument('--warmup', type=int, default=3,
                        help='untimed steps per model first')
    parser.add_argument('--threads', type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument('--fused-adamw', action='store_true',
                        help='AdamW(fused=True) for every model')
    parser.add_argument('--memory-steps', type=int, default=2,
                        help='steps run in each memory-probe process')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory probes')
    parser.add_argument('--repeats', type=int, default=None, help='runs per op in the '
                        'ops / sparse-conv sections (default: 25 grouping, 5 attention, '
                        '10 sparse conv)')
    parser.add_argument('--op-batch', type=int, default=None, help='batch of the ops '
                        'sections (default: 128 grouping and host, 16 attention, 8 sparse '
                        'conv, 256 loader collate)')
    parser.add_argument('--loader-images', type=int, default=64,
                        help='JPEGs the loader section makes and times per round')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', default=None, help='also write the results here')
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.arch = args.arch or DEFAULT_ARCH[args.backbone]
    if not args.greenmim_config and args.arch not in GREENMIM_CONFIGS[args.backbone]:
        parser.error(f'--arch {args.arch}: no {args.backbone} arch of that name; choose '
                     f'one of {", ".join(GREENMIM_CONFIGS[args.backbone])}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is visible to torch; run on a GPU '
                     'machine or use --device cpu')
    if 'flex' in args.attn_backend and args.device != 'cuda':
        parser.error('--attn-backend flex: FlexAttention has no backward on the CPU; '
                     'use --attn-backend sdpa there')
    if 'max' in args.batch_size and args.device != 'cuda':
        parser.error('--batch-size max: the largest batch is searched on the GPU only; '
                     'give numbers on the CPU, e.g. --batch-size 8')
    return args


def step_options(args: argparse.Namespace) -> StepOptions:
    return StepOptions(device=args.device, amp=args.amp, amp_dtype=args.amp_dtype,
                       compile=args.compile, compile_backend=args.compile_backend,
                       compile_mode=args.compile_mode,
                       fused_adamw=args.fused_adamw, threads=args.threads,
                       seed=args.seed)


def run(args: argparse.Namespace) -> dict:
    """Run the chosen sections and print their tables. Returns ``tables`` (markdown),
    the rows of each section and, for ``step``, its ``results`` and ``variants``."""
    import greenmim_mm  # noqa: F401  (registers the models and applies compat fixes)
    from .measure import markdown_table

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    sections = SECTIONS if args.section == 'all' else (args.section, )
    out = dict(args=vars(args), tables={})
    if 'step' in sections:
        from .comparisons import comparison
        from .runner import run_steps, steps_table

        options = step_options(args)
        variants = comparison(args.backbone, args.arch, args.attn_backend,
                              args.greenmim_config)
        results = run_steps(variants, args.batch_size, options, args.steps, args.warmup,
                            not args.no_memory, args.memory_steps)
        title = f'{args.backbone} {args.arch}: training step'
        out['tables']['step'] = steps_table(results, variants, options, title)
        out['step'] = [dict(dataclasses.asdict(r), images_per_s=r.images_per_s)
                       for r in results]
        out['results'], out['variants'] = results, variants
    tables = []
    if 'ops' in sections:
        from .grouping_attention import attention_table, grouping_table

        tables += [('grouping', grouping_table(**_op_kwargs(args, 128, 25))),
                   ('attention', attention_table(device=args.device,
                                                 **_op_kwargs(args, 16, 5)))]
    if 'sparse-conv' in sections:
        from .sparse_conv import sparse_conv_table

        tables.append(('sparse-conv', sparse_conv_table(
            device=args.device, seed=args.seed, **_op_kwargs(args, 8, 10))))
    if 'host' in sections:
        from .host import host_table

        tables.append(('host', host_table(args.backbone, args.arch, seed=args.seed,
                                          **_op_kwargs(args, 128, 5))))
    if 'loader' in sections:
        from .loader import loader_table

        table = loader_table(args.arch if args.backbone == 'swin' else 'base',
                             images=args.loader_images, seed=args.seed,
                             device=args.device, **_op_kwargs(args, 256, 5))
        tables += [('loader', table), ('loader-cores', table.pop('cores')),
                   ('loader-device-decode', table.pop('decode'))]
    for name, table in tables:
        out['tables'][name] = markdown_table(**table)
        out[name] = table['rows']
    for table in out['tables'].values():
        print(table, end='\n\n', flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({k: v for k, v in out.items() if k not in ('results', 'variants')},
                      f, indent=2, default=str)
    return out


def _op_kwargs(args: argparse.Namespace, batch: int, repeats: int) -> dict:
    return dict(batch=args.op_batch or batch, repeats=args.repeats or repeats)


def main(argv: Optional[List[str]] = None) -> dict:
    return run(parse_args(argv))
