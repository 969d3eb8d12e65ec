"""Draw what a GreenMIM model reconstructs of one image.

    python tools/visualize_reconstruction.py CONFIG CKPT IMAGE [--out OUT.png]
        [--mask-ratio 0.75] [--seed 0] [--device cpu] [--size 224]

The image is resized (shorter side) and centre-cropped to the model's input size, a
random unit mask is drawn (``--seed`` makes it reproducible) and the PNG shows
original | masked | reconstruction | reconstruction with the visible units pasted back.
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.dataset import default_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS, TRANSFORMS
from PIL import Image

import greenmim_mm  # noqa: F401  (registers the modules, applies compat fixes)
from greenmim_mm.datasets import load_rgb_image
from greenmim_mm.engine.launch import UsageError
from greenmim_mm.visualization import reconstruction_panels


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw original | masked | reconstruction | reconstruction + '
        'visible units of one image with a GreenMIM checkpoint.')
    parser.add_argument('config', help='the pretraining config')
    parser.add_argument('checkpoint', help='checkpoint file of that config')
    parser.add_argument('image', help='image file (any format PIL reads)')
    parser.add_argument(
        '--out', help='output PNG (default: <image name>_reconstruction.png)')
    parser.add_argument(
        '--mask-ratio', type=float,
        help='fraction of masked units (default: the config\'s mask generator)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the mask')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument(
        '--size', type=int,
        help='side of the square input in px (default: the backbone img_size)')
    return parser.parse_args(argv)


def _config_mask_ratio(cfg: Config) -> float:
    """The mask ratio of the config's training pipeline, 0.75 if it has none."""
    pipeline = cfg.get('train_dataloader', {}).get('dataset', {}).get('pipeline', [])
    for transform in pipeline:
        if transform.get('type') == 'GreenMIMMaskGenerator':
            return transform.get('mask_ratio', 0.75)
    return 0.75


def image_batch(image_path: str, size: int, mask_ratio: float, mask_unit: int,
                seed: int) -> dict:
    """One image as a collated batch: resized, centre-cropped, masked, packed."""
    image_bgr = load_rgb_image(image_path)[..., ::-1]  # as LoadImageFromFile loads
    pipeline = Compose([
        TRANSFORMS.build(cfg) for cfg in [
            dict(type='ResizeEdge', scale=size, edge='short', backend='pillow',
                 interpolation='bicubic'),
            dict(type='CenterCrop', crop_size=size),
            dict(type='GreenMIMMaskGenerator', mask_ratio=mask_ratio,
                 mask_unit=mask_unit),
            dict(type='PackInputs'),
        ]
    ])
    torch.manual_seed(seed)  # GreenMIMMaskGenerator draws from torch's generator
    packed = pipeline(dict(img=np.ascontiguousarray(image_bgr), img_path=image_path))
    return default_collate([packed])


def prepare(args: argparse.Namespace) -> Tuple[Config, dict, int, float]:
    """Read the config and the image, draw the mask: every input error happens here."""
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not Path(path).is_file():
            raise FileNotFoundError(f'{what} file not found: {path!r}. Check the path.')
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))

    mask_unit = cfg.model.head.patch_size
    size = args.size
    if size is None:
        img_size = cfg.model.backbone.get('img_size', 224)
        size = img_size if isinstance(img_size, int) else img_size[0]
    if size % mask_unit:
        lower = max(mask_unit, size // mask_unit * mask_unit)
        raise ValueError(f'--size {size} is not a multiple of the mask unit '
                         f'{mask_unit} px: use e.g. --size {lower} or '
                         f'--size {lower + mask_unit}.')
    mask_ratio = _config_mask_ratio(cfg) if args.mask_ratio is None else args.mask_ratio
    batch = image_batch(args.image, size, mask_ratio, mask_unit, args.seed)
    return cfg, batch, size, mask_ratio


def main(argv: Optional[List[str]] = None) -> Path:
    """Write the picture and return its path.

    Raises:
        UsageError: a missing or unreadable file, or a size or mask ratio that does
            not fit (the message says which and how to fix it).
    """
    args = parse_args(argv)
    try:
        cfg, batch, size, mask_ratio = prepare(args)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from error

    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True,
                    logger='silent')
    model.to(args.device)
    torch.manual_seed(args.seed)
    panel = reconstruction_panels(model, batch)

    out = Path(args.out or f'{Path(args.image).stem}_reconstruction.png')
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(panel).save(out)
    print(f'Saved {out} (original | masked | reconstruction | reconstruction + '
          f'visible), {size} px, mask ratio {mask_ratio}.')
    return out


if __name__ == '__main__':
    try:
        main()
    except UsageError as error:
        sys.exit(f'error: {error}')
