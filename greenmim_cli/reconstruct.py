"""``tools/visualize_reconstruction.py``: what a GreenMIM checkpoint reconstructs of one
image, as a PNG (the panel itself is :func:`greenmim_mm.visualization.reconstruction_panels`,
which the training hook draws too)."""
import argparse
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.dataset import default_collate
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS, TRANSFORMS
from PIL import Image

from greenmim_mm.datasets.demo import DEMO_PHOTOS, load_rgb_image, skimage_data_dir
from greenmim_mm.engine.checkpoint import load_fitting_checkpoint
from greenmim_mm.errors import UsageError
from greenmim_mm.visualization import reconstruction_panels

from .exits import ArgumentParser, add_debug_flag
from .installed_configs import resolve_config


def config_mask_ratio(cfg: Config) -> float:
    """The mask ratio of the config's training pipeline, 0.75 if it has none."""
    pipeline = cfg.get('train_dataloader', {}).get('dataset', {}).get('pipeline', [])
    for transform in pipeline:
        if transform.get('type') == 'GreenMIMMaskGenerator':
            return transform.get('mask_ratio', 0.75)
    return 0.75


def image_batch(image_path: str, size: int, mask_ratio: float, mask_unit: int,
                seed: int) -> dict:
    """One image as a collated batch: resized, centre-cropped, masked, packed.

    The mask is drawn from torch's generator seeded with ``seed``.
    """
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


def resolve_image(image: str) -> str:
    """``image`` if it is a file, else the path of the demo photograph of that name
    (``chelsea``: scikit-image's ``chelsea.png``, see :data:`DEMO_PHOTOS`).

    Raises:
        FileNotFoundError: neither a file nor a demo photograph's name.
    """
    if Path(image).is_file():
        return image
    if image in DEMO_PHOTOS:
        return str(Path(skimage_data_dir()) / DEMO_PHOTOS[image])
    raise FileNotFoundError(
        f'Image file not found: {image!r}. Give an image file or the name of a demo '
        f'photograph: {", ".join(sorted(DEMO_PHOTOS))}.')


def default_output(image: str) -> Path:
    """Where the panel of ``image`` goes without ``--out``: under ``work_dirs/``."""
    return Path('work_dirs') / 'reconstructions' / f'{Path(image).stem}.png'


def _prepare(config: str, checkpoint: str, image: str, mask_ratio: Optional[float],
             seed: int, size: Optional[int]) -> Tuple[Config, dict]:
    """Read the config and the image, draw the mask: every input error happens here."""
    config = resolve_config(config)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f'checkpoint file not found: {checkpoint!r}. Check the path.')
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))

    mask_unit = cfg.model.head.patch_size
    if size is None:
        img_size = cfg.model.backbone.get('img_size', 224)
        size = img_size if isinstance(img_size, int) else img_size[0]
    if size % mask_unit:
        lower = max(mask_unit, size // mask_unit * mask_unit)
        raise ValueError(f'--size {size} is not a multiple of the mask unit '
                         f'{mask_unit} px: use e.g. --size {lower} or '
                         f'--size {lower + mask_unit}.')
    mask_ratio = config_mask_ratio(cfg) if mask_ratio is None else mask_ratio
    return cfg, image_batch(resolve_image(image), size, mask_ratio, mask_unit, seed)


def draw_reconstruction(config: str, checkpoint: str, image: str,
                        out: Optional[str] = None, mask_ratio: Optional[float] = None,
                        seed: int = 0, device: str = 'cpu',
                        size: Optional[int] = None) -> Path:
    """Draw what a GreenMIM checkpoint reconstructs of one image; return the PNG's path.

    ``image`` is an image file or the name of a demo photograph (``chelsea``). It is
    resized (shorter side) and centre-cropped to ``size`` (default: the backbone's
    ``img_size``), a random unit mask is drawn (``seed``; ``mask_ratio`` defaults to
    the config's mask generator) and the panel is written to ``out`` (default:
    ``work_dirs/reconstructions/<image name>.png``).

    Raises:
        UsageError: a missing or unreadable file, or a size or mask ratio that does
            not fit (the message says which and how to fix it).
    """
    try:
        cfg, batch = _prepare(config, checkpoint, image, mask_ratio, seed, size)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from error

    model = MODELS.build(cfg.model)
    load_fitting_checkpoint(model, checkpoint)  # a broken or other model's: one line
    model.to(device)
    torch.manual_seed(seed)
    panel = reconstruction_panels(model, batch)

    path = Path(out) if out else default_output(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(panel).save(path)
    return path


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = ArgumentParser(
        description='Draw original | masked | prediction | MAE-style reconstruction | '
        'MAE-style + visible units of one image with a GreenMIM checkpoint.')
    parser.add_argument('config', help='the pretraining config')
    parser.add_argument('checkpoint', help='checkpoint file of that config')
    parser.add_argument(
        'image', help='image file (any format PIL reads) or the name of a demo '
        f'photograph: {", ".join(sorted(DEMO_PHOTOS))}')
    parser.add_argument(
        '--out', help='output PNG (default: work_dirs/reconstructions/<image name>.png)')
    parser.add_argument(
        '--mask-ratio', type=float,
        help='fraction of masked units (default: the config\'s mask generator)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the mask')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument(
        '--size', type=int,
        help='side of the square input in px (default: the backbone img_size)')
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = vars(parse_args(argv))
    args.pop('debug')
    out = draw_reconstruction(**args)
    print(f'Saved {out}: original | masked | prediction (visible-unit statistics) | '
          'MAE-style (true unit statistics) | MAE-style + visible units.')
