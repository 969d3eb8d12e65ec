"""Reconstruction pictures, one implementation for ``tools/visualize_reconstruction.py``
(:func:`draw_reconstruction`) and ``ReconstructionVisualizationHook``
(:func:`reconstruction_panels`).

A panel is one row per image: original | masked | reconstruction | reconstruction with
the visible units pasted back, under a strip of labels, as an ``(H, W, 3)`` uint8 RGB
array (what mmengine's visualizer backends take).
"""
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.dataset import default_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS, TRANSFORMS
from PIL import Image
from torch import Tensor, nn

from .datasets.demo import load_rgb_image
from .engine.launch import UsageError

PANEL_LABELS = ('original', 'masked', 'reconstruction', 'rec. + visible')
MASK_GREY = 127  # masked units are drawn in this grey
GAP = 4  # white pixels between pictures
HEADER = 18  # height of the label strip


def to_rgb_images(inputs: Tensor, data_preprocessor: nn.Module) -> List[np.ndarray]:
    """Undo the data preprocessor: ``(B, 3, H, W)`` model inputs -> uint8 RGB images.

    Undoes ``mean``/``std``; the channels are taken as RGB when the preprocessor
    converted them (``to_rgb``/``bgr_to_rgb``, the usual setting after
    ``LoadImageFromFile``, which loads BGR) and as BGR otherwise.
    """
    images = inputs.detach().float().cpu()
    if getattr(data_preprocessor, '_enable_normalize', False):
        images = images * data_preprocessor.std.cpu() + data_preprocessor.mean.cpu()
    if not getattr(data_preprocessor, '_channel_conversion', False):
        images = images.flip(1)  # BGR -> RGB
    images = images.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return [image.numpy() for image in images]  # B x (H, W, 3)


def unit_mask_to_pixels(mask: np.ndarray, image_hw: Sequence[int]) -> np.ndarray:
    """Expand a ``(Hu, Wu)`` unit mask to an ``(H, W)`` pixel mask."""
    grid_h, grid_w = mask.shape
    unit_h, unit_w = image_hw[0] // grid_h, image_hw[1] // grid_w
    return np.repeat(np.repeat(mask, unit_h, axis=0), unit_w, axis=1)


def _label_strip(width: int, label: str) -> np.ndarray:
    """A white ``(HEADER, width, 3)`` strip with ``label`` centred, shrunk to fit."""
    strip = np.full((HEADER, width, 3), 255, dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = 0.45
    text_w, text_h = cv2.getTextSize(label, font, scale, 1)[0]
    if text_w > width - 2:
        scale *= (width - 2) / text_w
        text_w, text_h = cv2.getTextSize(label, font, scale, 1)[0]
    origin = ((width - text_w) // 2, (HEADER + text_h) // 2)
    cv2.putText(strip, label, origin, font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def reconstruction_panel(image: np.ndarray, mask: np.ndarray,
                         reconstruction: np.ndarray, labels: bool = True) -> np.ndarray:
    """One row: original | masked | reconstruction | reconstruction + visible.

    Args:
        image: ``(H, W, 3)`` uint8 RGB input.
        mask: ``(Hu, Wu)`` bool unit mask, True = masked.
        reconstruction: ``(H, W, 3)`` uint8 RGB prediction.
        labels: Put a label strip above the pictures.

    Returns:
        ``(HEADER + H, 4 W + 3 GAP, 3)`` uint8 RGB (no strip: ``(H, ...)``).
    """
    hidden = unit_mask_to_pixels(np.asarray(mask, dtype=bool), image.shape[:2])
    masked = np.where(hidden[..., None], np.uint8(MASK_GREY), image)
    pasted = np.where(hidden[..., None], reconstruction, image)
    pictures = [image, masked, reconstruction, pasted]
    if labels:
        pictures = [np.concatenate([_label_strip(picture.shape[1], label), picture])
                    for picture, label in zip(pictures, PANEL_LABELS)]
    gap = np.full((pictures[0].shape[0], GAP, 3), 255, dtype=np.uint8)
    row = [pictures[0]]
    for picture in pictures[1:]:
        row += [gap, picture]
    return np.concatenate(row, axis=1)


@torch.no_grad()
def reconstruction_panels(model: nn.Module, data: dict) -> np.ndarray:
    """Reconstruct a batch with ``model`` and draw it, one row per image.

    Args:
        model: A ``GreenMIM`` model (not a DDP wrapper).
        data: A batch as the dataloader gives it (``inputs``, ``data_samples``
            with masks); it goes through ``model.data_preprocessor``.

    Returns:
        ``(B * (HEADER + H) + (B - 1) * GAP, 4 W + 3 GAP, 3)`` uint8 RGB.
    """
    was_training = model.training
    model.eval()
    try:
        data = model.data_preprocessor(data, False)
        inputs, samples = data['inputs'], data['data_samples']
        reconstructions = model.reconstruct(inputs, samples)
    finally:
        model.train(was_training)
    masks = model.unit_masks(inputs, samples).numpy()
    originals = to_rgb_images(inputs, model.data_preprocessor)
    predictions = to_rgb_images(reconstructions, model.data_preprocessor)
    rows = [reconstruction_panel(image, mask, prediction)
            for image, mask, prediction in zip(originals, masks, predictions)]
    gap = np.full((GAP, rows[0].shape[1], 3), 255, dtype=np.uint8)
    stacked = [rows[0]]
    for row in rows[1:]:
        stacked += [gap, row]
    return np.concatenate(stacked, axis=0)



# ----------------------------------------------------------------------------------
# One image from a config and a checkpoint (tools/visualize_reconstruction.py)
# ----------------------------------------------------------------------------------
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


def _prepare(config: str, checkpoint: str, image: str, mask_ratio: Optional[float],
             seed: int, size: Optional[int]) -> Tuple[Config, dict]:
    """Read the config and the image, draw the mask: every input error happens here."""
    for path, what in ((config, 'config'), (checkpoint, 'checkpoint')):
        if not Path(path).is_file():
            raise FileNotFoundError(f'{what} file not found: {path!r}. Check the path.')
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
    return cfg, image_batch(image, size, mask_ratio, mask_unit, seed)


def draw_reconstruction(config: str, checkpoint: str, image: str,
                        out: Optional[str] = None, mask_ratio: Optional[float] = None,
                        seed: int = 0, device: str = 'cpu',
                        size: Optional[int] = None) -> Path:
    """Draw what a GreenMIM checkpoint reconstructs of one image; return the PNG's path.

    The image is resized (shorter side) and centre-cropped to ``size`` (default: the
    backbone's ``img_size``), a random unit mask is drawn (``seed``; ``mask_ratio``
    defaults to the config's mask generator) and the panel is written to ``out``
    (default: ``<image name>_reconstruction.png``).

    Raises:
        UsageError: a missing or unreadable file, or a size or mask ratio that does
            not fit (the message says which and how to fix it).
    """
    try:
        cfg, batch = _prepare(config, checkpoint, image, mask_ratio, seed, size)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from error

    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
    model.to(device)
    torch.manual_seed(seed)
    panel = reconstruction_panels(model, batch)

    path = Path(out or f'{Path(image).stem}_reconstruction.png')
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(panel).save(path)
    return path
