"""What the learning-signal experiment writes: its summary line, table and pictures."""
import io
import math
import statistics
from typing import Dict, List, Sequence

import numpy as np
import torch
from PIL import Image

ARM_LABELS = {'greenmim': 'GreenMIM', 'simmim': 'SimMIM', 'random': 'random init'}


def mean_std(values: Sequence[float]) -> tuple:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), spread


def summary_line(accuracies: Dict[str, List[float]], metric: str = 'top-1') -> str:
    """``learning signal (top-1, 5 seeds): greenmim=0.812+-0.010 ...`` (fractions)."""
    seeds = len(next(iter(accuracies.values())))
    arms = ' '.join('{}={:.3f}+-{:.3f}'.format(arm, *mean_std(values))
                    for arm, values in accuracies.items())
    return f'learning signal ({metric}, {seeds} seed{"s" if seeds != 1 else ""}): {arms}'


def results_table(accuracies: Dict[str, List[float]], costs: Dict[str, dict],
                  baseline: str = 'random') -> str:
    """Markdown: one row per arm, its pretraining cost and its downstream accuracy.

    The last column pairs each seed with the ``baseline`` arm's run on the same
    few-shot split: mean +- std of the differences, and on how many seeds it is ahead.
    """
    lines = ['| arm | pretraining steps | images seen | CPU s | wall s | final loss | '
             f'top-1 (mean +- std) | per seed | minus {baseline}, same split |',
             '|---|---|---|---|---|---|---|---|---|']
    for arm, values in accuracies.items():
        mean, std = mean_std(values)
        seeds = ' '.join(f'{v:.3f}' for v in values)
        cost = costs.get(arm)
        if cost:
            losses = [p['loss'] for p in cost['curve'][-50:]]
            pre = (f"{cost['steps']} | {cost['images']} | {cost['cpu_s']:.0f} | "
                   f"{cost['wall_s']:.0f} | {statistics.fmean(losses):.3f}")
        else:
            pre = '- | - | - | - | -'
        paired = '-'
        if arm != baseline and baseline in accuracies:
            diffs = [a - b for a, b in zip(values, accuracies[baseline])]
            diff_mean, diff_std = mean_std(diffs)
            ahead = sum(d > 0 for d in diffs)
            paired = f'{diff_mean:+.3f} +- {diff_std:.3f} ({ahead}/{len(diffs)} ahead)'
        lines.append(f'| {ARM_LABELS.get(arm, arm)} | {pre} | '
                     f'**{mean:.3f} +- {std:.3f}** | {seeds} | {paired} |')
    return '\n'.join(lines)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window or window < 2:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode='valid')


def plot_loss_curves(costs: Dict[str, dict], path: str) -> None:
    """Training loss against CPU seconds, one panel per pretraining method."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(costs), figsize=(5 * len(costs), 3.6), squeeze=False)
    for ax, (arm, cost) in zip(axes[0], costs.items()):
        cpu = np.array([p['cpu_s'] for p in cost['curve']])
        loss = np.array([p['loss'] for p in cost['curve']])
        window = max(1, len(loss) // 50)
        ax.plot(cpu, loss, color='0.8', lw=0.6, label='per step')
        ax.plot(cpu[window - 1:], _smooth(loss, window), lw=1.5,
                label=f'mean of {window} steps')
        ax.set_title(f"{ARM_LABELS.get(arm, arm)}: {cost['steps']} steps, "
                     f"{cost['images']} images in {cost['cpu_s']:.0f} CPU s", fontsize=9)
        ax.set_xlabel('CPU seconds (one thread)')
        ax.set_ylabel(cost.get('loss_name', 'loss'))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracies(accuracies: Dict[str, List[float]], metric: str, path: str) -> None:
    """Mean +- std of the downstream metric per arm, with every seed as a dot."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    arms = list(accuracies)
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    for x, arm in enumerate(arms):
        mean, std = mean_std(accuracies[arm])
        ax.bar(x, mean, yerr=std, capsize=6, color=f'C{x}', alpha=0.7)
        jitter = np.linspace(-0.15, 0.15, len(accuracies[arm]))
        ax.plot(x + jitter, accuracies[arm], 'k.', ms=5)
        ax.text(x, mean + std + 0.01, f'{mean:.3f}', ha='center', fontsize=8)
    ax.set_xticks(range(len(arms)), [ARM_LABELS.get(a, a) for a in arms])
    ax.set_ylabel(f'{metric} accuracy (test)')
    low = min(min(v) for v in accuracies.values())
    ax.set_ylim(max(0.0, math.floor(low * 10) / 10 - 0.1), 1.0)
    ax.set_title(f'fine-tuned, {len(accuracies[arms[0]])} seeds', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def simmim_reconstruction(model: torch.nn.Module, data: dict) -> tuple:
    """SimMIM's prediction of a batch: ``(inputs, masks, images)``; the masks are
    SimMIM's, over the first stage's tokens ``(B, H / 4, W / 4)``, True = masked.

    SimMIM's head regresses the normalised pixels directly (no per-unit
    normalisation), so its output is an image in the space of the inputs.
    """
    model.eval()
    data = model.data_preprocessor(data, False)
    inputs, samples = data['inputs'], data['data_samples']
    token_mask = torch.stack([sample.mask for sample in samples])  # B, H/4, W/4
    latent = model.backbone(inputs, token_mask)
    images = model.neck(latent[0])  # B, 3, H, W
    return inputs, token_mask.bool(), images


@torch.no_grad()
def reconstruction_rows(model: torch.nn.Module, data: dict) -> np.ndarray:
    """Panels (original | masked | reconstruction | + visible) of a batch, any method."""
    from greenmim_mm.visualization import (reconstruction_panel, reconstruction_panels,
                                           stack_rows, to_rgb_images)

    if hasattr(model, 'reconstruct') and hasattr(model, 'unit_masks'):  # GreenMIM
        return reconstruction_panels(model, data)
    inputs, masks, images = simmim_reconstruction(model, data)
    originals = to_rgb_images(inputs, model.data_preprocessor)
    predictions = to_rgb_images(images, model.data_preprocessor)
    return stack_rows([reconstruction_panel(image, mask.numpy(), prediction)
                       for image, mask, prediction in zip(originals, masks, predictions)])


def draw_reconstructions(panels: Dict[str, np.ndarray], path: str) -> None:
    """One titled picture per method, side by side."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    height, width = next(iter(panels.values())).shape[:2]
    fig, axes = plt.subplots(1, len(panels), squeeze=False,
                             figsize=(len(panels) * width / 100, height / 100 + 0.4))
    for ax, (title, panel) in zip(axes[0], panels.items()):
        ax.imshow(panel)
        ax.set_title(title, fontsize=9)
        ax.axis('off')
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100)
    plt.close(fig)
    # 256 colours: a third of the size, small enough to keep next to the docs
    with Image.open(buffer) as image:
        image.convert('RGB').quantize(256).save(path, optimize=True)


def checkpoint_batch(cfg, image_paths: Sequence[str], seed: int = 0) -> dict:
    """``image_paths`` through the config's pipeline minus its crop and flip, collated:
    the pretraining inputs and masks, on fixed images with fixed masks."""
    from mmengine.dataset import Compose, default_collate

    steps = [step for step in cfg.train_pipeline
             if step['type'] not in ('RandomResizedCrop', 'TensorRandomResizedCrop',
                                     'RandomFlip')]
    pipeline = Compose(steps)
    state = np.random.get_state()
    np.random.seed(seed)  # the mask generators draw from numpy's global generator
    try:
        samples = [pipeline(dict(img_path=path)) for path in image_paths]
    finally:
        np.random.set_state(state)
    return default_collate(samples)


def reconstruction_picture(configs: Dict[str, str], checkpoints: Dict[str, str],
                           image_paths: Sequence[str], path: str) -> None:
    """Rebuild each pretraining model from its config and checkpoint, reconstruct
    ``image_paths`` with its own mask generator, and save one picture."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS

    init_default_scope('mmpretrain')
    panels = {}
    for arm, config in configs.items():
        cfg = Config.fromfile(config)
        model = MODELS.build(cfg.model)
        load_checkpoint(model, checkpoints[arm], map_location='cpu', logger='silent')
        masker = next(s for s in cfg.train_pipeline if 'Mask' in s['type'])
        ratio = masker['mask_ratio']
        rows = reconstruction_rows(model, checkpoint_batch(cfg, image_paths))
        panels[f'{ARM_LABELS.get(arm, arm)} (mask ratio {ratio})'] = rows
    draw_reconstructions(panels, path)

