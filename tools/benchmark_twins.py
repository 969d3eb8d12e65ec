"""GreenMIM Twins vs the same Twins trained the SimMIM way: step time, FLOPs, memory.

Two pretraining models around the same Twins-SVT arch, at the same 224 px and mask
ratio, on random images pushed through each model's own training pipeline:

- **GreenMIM**: ``configs/pretrain/greenmim_twins_{s,l}.py`` -- ``GreenMIMSVT``
  encodes the visible 32 px units only (25% of them: 12 of 49);
- **SimMIM**: mmpretrain's ``SimMIM`` algorithm with ``SimMIMSVT`` (below): the stock
  ``SVT`` fed the *full* image, the patch tokens of masked units replaced by a
  learned mask token after the stage-1 patch embedding, as ``SimMIMSwinTransformer``
  does for Swin; ``SimMIMMaskGenerator`` (32 px mask patches, same ratio),
  ``SimMIMLinearDecoder`` and ``SimMIMHead`` (L1), as mmpretrain's SimMIM configs.

mmpretrain has no SimMIM Twins config, so this one is derived from the GreenMIM config
(same backbone arguments, crop and flip). The stepping, timing, FLOP counting and
memory measurement are those of ``tools/benchmark.py`` (the Swin comparison): full
training steps (``model.train_step``: data preprocessor, forward, backward, AdamW)
after a warm-up, alternating the two models step by step; peak memory in a fresh
subprocess per model.

    python tools/benchmark_twins.py                                # Twins-S, batch 8, CPU
    python tools/benchmark_twins.py --arch large --batch-size 64 --device cuda --amp
"""
import argparse
import json
import os.path as osp
import statistics
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmpretrain.models.backbones import SVT
from mmpretrain.registry import MODELS
from torch import Tensor, nn

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import benchmark  # noqa: E402  (tools/benchmark.py, the Swin comparison)
from benchmark import (build_model, count_flops, current_rss_bytes,  # noqa: E402
                       make_batches, make_stepper, peak_rss_bytes, time_alternating)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
GREENMIM_CONFIGS = {
    'small': osp.join(REPO_ROOT, 'configs', 'pretrain', 'greenmim_twins_s.py'),
    'large': osp.join(REPO_ROOT, 'configs', 'pretrain', 'greenmim_twins_l.py'),
}
NUM_BATCHES = 4  # distinct batches (masks) each model cycles through


@MODELS.register_module(force=True)  # force: this file is also run as a subprocess
class SimMIMSVT(SVT):
    """Twins-SVT for SimMIM: masked patch tokens replaced by a learned mask token.

    ``forward(img, mask)`` with a ``(B, H / 4, W / 4)`` patch mask (1 = masked, as
    ``SimMIMMaskGenerator`` makes it) is ``PCPVT.forward`` with one change after the
    stage-1 patch embedding: ``x = x * (1 - w) + mask_token * w``. ``forward(img)`` is
    the stock forward.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims[0]))

    def init_weights(self) -> None:
        super().init_weights()
        nn.init.trunc_normal_(self.mask_token, mean=0, std=.02)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
        if mask is None:
            return super().forward(x)
        batch = x.shape[0]
        outputs = []
        for i in range(self.num_stage):
            x, hw_shape = self.patch_embeds[i](x)  # B, H*W, C
            if i == 0:
                w = mask.flatten(1).unsqueeze(-1).type_as(x)  # B, H*W, 1
                x = x * (1. - w) + self.mask_token.expand(batch, x.shape[1], -1) * w
            x = self.position_encoding_drops[i](x)
            for j, layer in enumerate(self.stages[i]):
                x = layer(x, hw_shape)
                if j == 0:
                    x = self.position_encodings[i](x, hw_shape)
            x = getattr(self, f'norm_after_stage{i}')(x)
            x = x.reshape(batch, *hw_shape, -1).permute(0, 3, 1, 2).contiguous()
            if i in self.out_indices:
                outputs.append(x)
        return tuple(outputs)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Training-step time and peak memory of GreenMIM Twins vs SimMIM Twins')
    parser.add_argument('--arch', choices=sorted(GREENMIM_CONFIGS), default='small',
                        help='Twins-SVT arch of both models (default: small)')
    parser.add_argument('--batch-size', type=int, default=8,
                        help='images per step for both models (default: 8)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: AmpOptimWrapper on CUDA, '
                        'bfloat16 autocast on the CPU')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'], default=None,
                        help='autocast dtype (default: float16 on CUDA, bfloat16 on CPU)')
    parser.add_argument('--steps', type=int, default=10,
                        help='timed steps per model (default: 10)')
    parser.add_argument('--warmup', type=int, default=3,
                        help='untimed steps per model first (default: 3)')
    parser.add_argument('--threads', type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument('--memory-steps', type=int, default=2,
                        help='steps run in each memory subprocess (default: 2)')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory subprocesses')
    parser.add_argument('--greenmim-config', default=None,
                        help='GreenMIM Twins config (default: configs/pretrain/'
                        'greenmim_twins_{s,l}.py for --arch)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', default=None, help='also write the results here')
    parser.add_argument('--memory-worker', choices=['greenmim', 'simmim'],
                        default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is visible to torch')
    if args.amp_dtype is None:
        args.amp_dtype = 'float16' if args.device == 'cuda' else 'bfloat16'
    if args.greenmim_config is None:
        args.greenmim_config = GREENMIM_CONFIGS[args.arch]
    # The helpers shared with tools/benchmark.py read its options: those not exposed
    # here keep their defaults there.
    for name, value in vars(benchmark.parse_args([])).items():
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


# --------------------------------------------------------------------------- models
def simmim_config(greenmim):
    """The SimMIM Twins config matching a GreenMIM Twins config.

    Same backbone arguments (as ``SimMIMSVT``), same crop and flip, the mask drawn by
    ``SimMIMMaskGenerator`` with 32 px mask patches at the GreenMIM ratio.
    """
    from mmengine.config import Config

    backbone = dict(greenmim.model.backbone)
    for key in ('mask_unit', 'attn_backend', 'conv_backend'):
        backbone.pop(key, None)
    backbone['type'] = 'SimMIMSVT'
    preprocessor = dict(greenmim.model.data_preprocessor)
    preprocessor['type'] = 'SelfSupDataPreprocessor'
    pipeline = []
    steps = greenmim.get('train_pipeline') or greenmim.train_dataloader.dataset.pipeline
    for step in steps:
        step = dict(step)
        if step['type'] == 'RandomResizedCrop':
            crop = step['scale']
        if step['type'] == 'GreenMIMMaskGenerator':
            step = dict(type='SimMIMMaskGenerator', input_size=crop,
                        mask_patch_size=step.get('mask_unit', 32), model_patch_size=4,
                        mask_ratio=step['mask_ratio'])
        pipeline.append(step)
    arch = backbone['arch']
    last_dims = (SVT.arch_zoo[arch] if isinstance(arch, str) else arch)['embed_dims'][-1]
    return Config(dict(
        model=dict(
            type='SimMIM',
            data_preprocessor=preprocessor,
            backbone=backbone,
            neck=dict(type='SimMIMLinearDecoder', in_channels=last_dims,
                      encoder_stride=32),
            head=dict(type='SimMIMHead', patch_size=4,
                      loss=dict(type='PixelReconstructionLoss', criterion='L1',
                                channel=3))),
        train_pipeline=pipeline))


def load_model_configs(args: argparse.Namespace) -> Dict[str, 'Config']:
    from mmengine.config import Config

    greenmim = Config.fromfile(args.greenmim_config)
    return dict(greenmim=greenmim, simmim=simmim_config(greenmim))


# --------------------------------------------------------------------------- memory
def memory_worker(args: argparse.Namespace) -> None:
    """Peak memory of one model's training steps, in this (fresh) process; prints JSON."""
    import greenmim_mm  # noqa: F401
    from mmengine.registry import init_default_scope

    init_default_scope('mmpretrain')
    device = torch.device(args.device)
    cfg = load_model_configs(args)[args.memory_worker]
    batches = make_batches(cfg, args.batch_size, 1, np.random.default_rng(args.seed))
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    baseline = current_rss_bytes()
    step = make_stepper(build_model(cfg, device), args)
    for _ in range(args.memory_steps):
        step(batches[0])
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = peak_rss_bytes() - baseline
    print(json.dumps(dict(peak_bytes=peak)))


def measure_memory(args: argparse.Namespace, name: str) -> int:
    """Run :func:`memory_worker` for ``name`` in a subprocess, return its peak bytes."""
    argv = [sys.executable, osp.abspath(__file__), '--memory-worker', name,
            '--arch', args.arch, '--batch-size', str(args.batch_size),
            '--device', args.device, '--amp-dtype', args.amp_dtype,
            '--memory-steps', str(args.memory_steps), '--seed', str(args.seed),
            '--greenmim-config', args.greenmim_config]
    if args.amp:
        argv.append('--amp')
    if args.threads:
        argv += ['--threads', str(args.threads)]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise RuntimeError(f'The memory run of {name} failed:\n{result.stderr[-3000:]}')
    return json.loads(result.stdout.strip().splitlines()[-1])['peak_bytes']


# -------------------------------------------------------------------------- reports
def format_report(args: argparse.Namespace, cfgs: dict,
                  times: Dict[str, Dict[str, List[float]]], flops: Dict[str, int],
                  memory: Optional[Dict[str, int]]) -> str:
    """The results as a markdown table, with the setup above it."""
    wall = {name: statistics.median(t['wall']) for name, t in times.items()}
    cpu = {name: statistics.median(t['cpu']) for name, t in times.items()}
    on_cpu = args.device == 'cpu'
    device = (f'CPU ({torch.get_num_threads()} threads)' if on_cpu
              else torch.cuda.get_device_name(0))
    precision = f'AMP {args.amp_dtype}' if args.amp else 'fp32'
    masker = next(step for step in cfgs['simmim'].train_pipeline
                  if step['type'] == 'SimMIMMaskGenerator')
    lines = [f'Twins-SVT-{args.arch[0].upper()}, {masker["input_size"]} px, batch '
             f'{args.batch_size}, mask ratio {masker["mask_ratio"]}, {device}, '
             f'{precision}, torch {torch.__version__}; medians of {args.steps} '
             f'alternating steps after {args.warmup} warm-up steps each',
             '- GreenMIM: GreenMIMSVT on the visible 32 px units, GreenMIMDecoder, '
             'MAEPretrainHead',
             '- SimMIM: SimMIMSVT (full image, mask token), SimMIMLinearDecoder, '
             'SimMIMHead',
             '',
             '| model | step time (median) | min - max | '
             + ('CPU time (median) | ' if on_cpu else '')
             + 'images/s | GFLOPs / step | peak memory |',
             '|---|---|---|' + ('---|' if on_cpu else '') + '---|---|---|']
    for name, label in (('greenmim', 'GreenMIM'), ('simmim', 'SimMIM')):
        mem = f'{memory[name] / 2**20:.0f} MiB' if memory else 'n/a'
        row = (f'| {label} | {wall[name] * 1e3:.0f} ms | '
               f"{min(times[name]['wall']) * 1e3:.0f} - "
               f"{max(times[name]['wall']) * 1e3:.0f} ms | ")
        if on_cpu:
            row += f'{cpu[name] * 1e3:.0f} ms | '
        row += (f'{args.batch_size / wall[name]:.1f} | {flops[name] / 1e9:.1f} | '
                f'{mem} |')
        lines.append(row)
    ratio = f"{memory['greenmim'] / memory['simmim']:.0%} of SimMIM" if memory else 'n/a'
    row = f"| **SimMIM / GreenMIM** | **{wall['simmim'] / wall['greenmim']:.2f}x** | | "
    if on_cpu:
        row += f"**{cpu['simmim'] / cpu['greenmim']:.2f}x** | "
    row += (f"{wall['simmim'] / wall['greenmim']:.2f}x | "
            f"{flops['simmim'] / flops['greenmim']:.2f}x | **GreenMIM: {ratio}** |")
    lines.append(row)
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        torch.manual_seed(args.seed)
        memory_worker(args)
        return {}

    import greenmim_mm  # noqa: F401  (registers GreenMIM and applies compat fixes)
    from mmengine.registry import init_default_scope

    init_default_scope('mmpretrain')
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    device = torch.device(args.device)
    cfgs = load_model_configs(args)
    batches = {name: make_batches(cfg, args.batch_size, NUM_BATCHES, rng)
               for name, cfg in cfgs.items()}
    steppers = {name: make_stepper(build_model(cfg, device), args)
                for name, cfg in cfgs.items()}
    flops = {name: count_flops(step, batches[name][0]) for name, step in steppers.items()}
    times = time_alternating(steppers, batches, args.steps, args.warmup)
    del steppers
    memory = None
    if not args.no_memory:
        memory = {name: measure_memory(args, name) for name in cfgs}

    print(format_report(args, cfgs, times, flops, memory))
    result = dict(args=vars(args), step_times_s=times, flops=flops,
                  peak_memory_bytes=memory,
                  median_wall_s={n: statistics.median(t['wall']) for n, t in times.items()},
                  median_cpu_s={n: statistics.median(t['cpu']) for n, t in times.items()})
    wall = result['median_wall_s']
    result['speedup'] = wall['simmim'] / wall['greenmim']
    if memory:
        result['memory_ratio'] = memory['greenmim'] / memory['simmim']
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
