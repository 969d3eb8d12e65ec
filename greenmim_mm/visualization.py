"""Reconstruction pictures, one implementation for ``tools/visualize_reconstruction.py``
(:func:`draw_reconstruction`) and ``ReconstructionVisualizationHook``
(:func:`reconstruction_panels`).

A panel is one row per image, five pictures under a strip of titles (:data:`COLUMNS`),
as an ``(H, W, 3)`` uint8 RGB array (what mmengine's visualizer backends take):

1. the original;
2. the masked input (masked units grey): what the encoder sees;
3. the prediction on its own: every unit the decoder predicts, brought back to pixels
   with one mean and one contrast, those of the visible units -- it depends only on
   what the encoder saw, so it shows what the model has learnt (before training: noise
   around grey);
4. the MAE-style reconstruction: each unit brought back with its true mean and std (the
   loss is on per-unit normalised pixels), as in MAE's figures -- the colours are
   partly the original's, the structure inside each unit is the model's;
5. that reconstruction with the visible units pasted back.
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
from mmpretrain.registry import MODELS, TRANSFORMS
from PIL import Image
from torch import Tensor, nn

from .datasets.demo import DEMO_PHOTOS, load_rgb_image, skimage_data_dir
from .engine.checkpoint import load_fitting_checkpoint
from .engine.launch import UsageError

# (title, what it shows) of each picture of a row, in order
COLUMNS = (
    ('original', 'input image'),
    ('masked', 'encoder input'),
    ('prediction', 'visible-unit stats'),
    ('MAE-style', 'true unit stats'),
    ('MAE-style', '+ visible units'),
)
# the same for a model whose prediction needs no statistics (SimMIM: raw pixels)
RAW_COLUMNS = (
    ('original', 'input image'),
    ('masked', 'encoder input'),
    ('prediction', 'model output'),
    ('prediction', '+ visible units'),
)
MASK_GREY = 127  # masked units are drawn in this grey
GAP = 4  # white pixels between pictures
HEADER = 30  # height of the title strip (two lines)


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


def _put_centred(strip: np.ndarray, text: str, baseline: int, scale: float,
                 colour: Tuple[int, int, int]) -> None:
    """Write ``text`` centred on ``strip`` (shrunk to fit its width), in place."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    width = strip.shape[1]
    text_w = cv2.getTextSize(text, font, scale, 1)[0][0]
    if text_w > width - 2:
        scale *= (width - 2) / text_w
        text_w = cv2.getTextSize(text, font, scale, 1)[0][0]
    cv2.putText(strip, text, ((width - text_w) // 2, baseline), font, scale, colour, 1,
                cv2.LINE_AA)


def _title_strip(width: int, title: str, subtitle: str) -> np.ndarray:
    """A white ``(HEADER, width, 3)`` strip: ``title`` above a smaller grey
    ``subtitle``, both centred."""
    strip = np.full((HEADER, width, 3), 255, dtype=np.uint8)
    _put_centred(strip, title, 12, 0.42, (0, 0, 0))
    _put_centred(strip, subtitle, 25, 0.34, (90, 90, 90))
    return strip


def _side_by_side(pictures: Sequence[np.ndarray], axis: int) -> np.ndarray:
    """Concatenate ``pictures`` along ``axis`` (1: a row, 0: a column) with white
    gaps of :data:`GAP` pixels between them."""
    gap_shape = list(pictures[0].shape)
    gap_shape[axis] = GAP
    gap = np.full(gap_shape, 255, dtype=np.uint8)
    joined = [pictures[0]]
    for picture in pictures[1:]:
        joined += [gap, picture]
    return np.concatenate(joined, axis=axis)


def reconstruction_panel(image: np.ndarray, mask: np.ndarray, prediction: np.ndarray,
                         reconstruction: Optional[np.ndarray] = None,
                         labels: bool = True) -> np.ndarray:
    """One row of the five pictures of :data:`COLUMNS` (without ``reconstruction``:
    the four of :data:`RAW_COLUMNS`, for a prediction in pixels, e.g. SimMIM's).

    Args:
        image: ``(H, W, 3)`` uint8 RGB input.
        mask: ``(Hu, Wu)`` bool unit mask, True = masked.
        prediction: ``(H, W, 3)`` uint8 RGB prediction with the visible units'
            statistics (``GreenMIM.reconstruct(..., statistics='visible')``).
        reconstruction: ``(H, W, 3)`` uint8 RGB prediction with each unit's true
            statistics (``statistics='unit'``); None: ``prediction`` is in pixels.
        labels: Put the title strip above the pictures.

    Returns:
        ``(HEADER + H, 5 W + 4 GAP, 3)`` uint8 RGB (no strip: ``(H, ...)``; four
        pictures without ``reconstruction``).
    """
    hidden = unit_mask_to_pixels(np.asarray(mask, dtype=bool), image.shape[:2])
    masked = np.where(hidden[..., None], np.uint8(MASK_GREY), image)
    if reconstruction is None:
        pictures, columns = [image, masked, prediction], RAW_COLUMNS
    else:
        pictures, columns = [image, masked, prediction, reconstruction], COLUMNS
    pictures.append(np.where(hidden[..., None], pictures[-1], image))  # + visible units
    if labels:
        pictures = [np.concatenate([_title_strip(picture.shape[1], *column), picture])
                    for picture, column in zip(pictures, columns)]
    return _side_by_side(pictures, axis=1)


@torch.no_grad()
def reconstruction_panels(model: nn.Module, data: dict) -> np.ndarray:
    """Reconstruct a batch with ``model`` and draw it, one row per image.

    Args:
        model: A ``GreenMIM`` model (not a DDP wrapper).
        data: A batch as the dataloader gives it (``inputs``, ``data_samples``
            with masks); it goes through ``model.data_preprocessor``.

    Returns:
        ``(B * (HEADER + H) + (B - 1) * GAP, 5 W + 4 GAP, 3)`` uint8 RGB.
    """
    was_training = model.training
    model.eval()
    try:
        data = model.data_preprocessor(data, False)
        inputs, samples = data['inputs'], data['data_samples']
        predictions, reconstructions = (  # one forward pass, two de-normalisations
            to_rgb_images(image, model.data_preprocessor)
            for image in model.reconstruct(inputs, samples,
                                           statistics=('visible', 'unit')))
    finally:
        model.train(was_training)
    masks = model.unit_masks(inputs, samples).numpy()
    originals = to_rgb_images(inputs, model.data_preprocessor)
    rows = [reconstruction_panel(*pictures)
            for pictures in zip(originals, masks, predictions, reconstructions)]
    return stack_rows(rows)


def stack_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Panel rows of one width, top to bottom with white gaps between them."""
    return _side_by_side(rows, axis=0)


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
        CheckpointMismatchError: a checkpoint of another model.
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
