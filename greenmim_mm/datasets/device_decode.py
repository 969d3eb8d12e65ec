"""Decode and crop on the training device: the workers only read JPEG bytes and draw.

With a GPU the workers' biggest cost, the JPEG decode (and the crop-resize after it),
can move to the device, where nvJPEG decodes a whole batch in one call. The workers
then read the file's bytes and its header (size), draw the crop box and the flip from
the same random stream as ``RandomResizedCrop`` / ``RandomFlip`` (the boxes depend
only on the image size), draw the mask and build the plan; the batch carries the
encoded bytes, and ``GreenMIMDataPreprocessor`` calls :func:`decode_crop_batch` on the
training device. Selected by the pipeline (``configs/_base_/datasets/
imagenet_bs256_greenmim_device-decode.py``), off by default::

    dict(type='LoadJPEGBytes'),
    dict(type='DeferredRandomResizedCrop', scale=224, crop_ratio_range=(0.2, 1.0),
         interpolation='bicubic'),
    dict(type='DeferredRandomFlip', prob=0.5),
    dict(type='GreenMIMMaskGenerator', mask_ratio=0.75, mask_unit=32),
    dict(type='PackInputs', algorithm_keys=DEFERRED_KEYS),  # + flip, a meta key

On the CPU the same code decodes with torchvision's CPU decoder (the tests' path).

**Bad input.** A file that is not a JPEG (PNG, ...), or a JPEG with an EXIF rotation,
is decoded in the worker (mmcv's cv2, as ``LoadImageFromFile``, which applies the
rotation) and travels as pixels: the device only crops it. A file whose
header cannot be read, or a JPEG without its end marker (truncated), is skipped in the
worker with one warning naming it (the transform returns None and mmengine's dataset
draws another image, as ``LoadImageFromFile(ignore_empty=True)``). A JPEG that passes
those checks and still fails to decode on the device is replaced by another image of
the batch, with one warning naming the file: never an error that stops the run.
"""
import io
import warnings
from typing import List, Optional, Sequence

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform, RandomFlip
from mmengine import fileio
from mmpretrain.datasets.transforms import RandomResizedCrop
from mmpretrain.registry import TRANSFORMS
from torch import Tensor

from .tensor_crop import INTERPOLATIONS, crop_resize

DEFERRED_KEYS = ('crop_box', 'crop_size', 'interpolation')
"""What ``PackInputs(algorithm_keys=...)`` must keep for :func:`decode_crop_batch` (``flip`` is
one of its meta keys already)."""
JPEG_START, JPEG_END = b'\xff\xd8', b'\xff\xd9'
EXIF_ORIENTATION = 0x0112


def _warn_skip(path: str, why: str) -> None:
    warnings.warn(f'Skipping image {path}: {why}.', stacklevel=2)


@TRANSFORMS.register_module()
class LoadJPEGBytes(BaseTransform):
    """Read an image file's bytes and its size, without decoding a JPEG.

    **Required Keys:** img_path (read unless ``img_bytes``, the file's bytes, is given)

    **Added Keys:** img (a JPEG: ``(L,)`` uint8 tensor of its bytes; another format or
    an EXIF-rotated JPEG: ``(3, H, W)`` uint8 BGR tensor, decoded here), img_shape,
    ori_shape (``(H, W)``).

    Returns None (skip, with one warning naming the file) for a file that is empty, not
    an image, or a truncated JPEG.
    """

    def transform(self, results: dict) -> Optional[dict]:
        from PIL import Image, UnidentifiedImageError

        path = results['img_path']
        data = results.get('img_bytes') or fileio.get(path)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                # a rotated JPEG (EXIF orientation): decoded here, rotated as cv2 does
                is_jpeg = (image.format == 'JPEG'
                           and image.getexif().get(EXIF_ORIENTATION, 1) == 1)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            _warn_skip(path, f'not a readable image ({error})')
            return None
        if is_jpeg:
            if not (data.startswith(JPEG_START) and data.rstrip(b'\0').endswith(JPEG_END)):
                _warn_skip(path, 'truncated JPEG (no end-of-image marker)')
                return None
            img = torch.frombuffer(bytearray(data), dtype=torch.uint8)  # L
        else:  # decoded here, as LoadImageFromFile would (BGR)
            decoded = mmcv.imfrombytes(data, flag='color', backend='cv2')
            if decoded is None:
                _warn_skip(path, 'the image does not decode')
                return None
            img = torch.from_numpy(np.ascontiguousarray(decoded)).permute(2, 0, 1)
            height, width = decoded.shape[:2]
        results['img'] = img
        results['img_shape'] = results['ori_shape'] = (height, width)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}()'


@TRANSFORMS.register_module()
class DeferredRandomResizedCrop(RandomResizedCrop):
    """``RandomResizedCrop``'s box (same arguments, same draws from numpy's stream),
    recorded for the device instead of applied.

    **Required Keys:** img_shape (``(H, W)`` of the stored image)

    **Added Keys:** crop_box (``(top, left, height, width)``), crop_size (``(h, w)``),
    interpolation; img_shape becomes the crop size.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f'DeferredRandomResizedCrop resizes with {list(INTERPOLATIONS)}, got '
                f'interpolation={self.interpolation!r}.')

    def transform(self, results: dict) -> dict:
        height, width = results['img_shape'][:2]
        # rand_crop_params reads only img.shape[:2]: a zero-size array stands in
        box = self.rand_crop_params(np.empty((height, width, 0), dtype=np.uint8))
        results['crop_box'] = tuple(int(v) for v in box)
        results['crop_size'] = tuple(self.scale)
        results['interpolation'] = self.interpolation
        results['img_shape'] = tuple(self.scale)
        return results


@TRANSFORMS.register_module()
class DeferredRandomFlip(RandomFlip):
    """``RandomFlip`` (same draws), recorded in ``flip`` for the device, not applied.
    Horizontal only."""

    def __init__(self, prob: float = 0.5, direction: str = 'horizontal') -> None:
        if direction != 'horizontal':
            raise ValueError(f"DeferredRandomFlip flips horizontally, got {direction!r}.")
        super().__init__(prob=prob, direction=direction)

    def _flip(self, results: dict) -> None:
        pass  # applied by decode_crop_batch


def _decode(jpegs: List[Tensor], device: torch.device, paths: Sequence[str]) -> list:
    """Decode a list of JPEGs on ``device`` (one batched call); on failure one by one,
    None (with one warning naming the file) for those that do not decode."""
    from torchvision.io import ImageReadMode, decode_jpeg

    rgb = ImageReadMode.RGB  # grayscale and CMYK JPEGs (ImageNet has both) as 3 channels
    if not jpegs:
        return []
    try:
        return list(decode_jpeg(jpegs, mode=rgb, device=device))
    except RuntimeError:
        pass
    images = []
    for jpeg, path in zip(jpegs, paths):
        try:
            images.append(decode_jpeg(jpeg, mode=rgb, device=device))
        except RuntimeError as error:
            _warn_skip(path, f'the JPEG does not decode ({str(error).splitlines()[0]}); '
                       'another image of the batch takes its place')
            images.append(None)
    return images


def decode_crop_batch(inputs: Sequence[Tensor], samples: Sequence,
                      device: torch.device) -> Tensor:
    """The ``(B, 3, h, w)`` uint8 BGR images of a batch of deferred samples, on
    ``device``: JPEG bytes decoded there in one call, other images copied; each
    cropped to its ``crop_box``, resized to ``crop_size`` (antialiased, as
    ``TensorRandomResizedCrop``) and flipped where ``flip``.

    Args:
        inputs: per sample an ``(L,)`` uint8 JPEG or a ``(3, H, W)`` uint8 BGR image.
        samples: the data samples with the :data:`DEFERRED_KEYS`.
        device: where to decode.
    """
    device = torch.device(device)
    encoded = [i for i, x in enumerate(inputs) if x.dim() == 1]
    paths = [samples[i].get('img_path', f'sample {i}') for i in encoded]
    decoded = dict(zip(encoded, _decode([inputs[i] for i in encoded], device, paths)))
    images: List[Optional[Tensor]] = []
    for i, (image, sample) in enumerate(zip(inputs, samples)):
        if i in decoded:
            image = decoded[i]
            image = None if image is None else image.flip(0)  # RGB -> BGR, as cv2
        else:
            image = image.to(device, non_blocking=True)
        if image is not None:
            image = crop_resize(image, sample.crop_box, tuple(sample.crop_size),
                                sample.interpolation)  # 3, h, w
            if sample.flip:
                image = image.flip(-1)
        images.append(image)
    good = [image for image in images if image is not None]
    if not good:
        raise RuntimeError('No image of the batch decoded: see the warnings above.')
    return torch.stack([good[i % len(good)] if image is None else image
                        for i, image in enumerate(images)])  # B, 3, h, w

