"""The mask generator of GreenMIM: one random mask per image over its mask-unit grid.

The mask follows :mod:`greenmim_mm.ops.masking`: a bool array ``(Hu, Wu)`` over mask
units (32 px for Swin/Twins at patch 4), ``True`` = masked. Every image of a given size
gets exactly ``int(Hu * Wu * (1 - mask_ratio))`` visible units, so masks of one batch
stack into a ``(B, Hu, Wu)`` tensor with the same visible count per sample.

**Where the mask lives.** It is drawn here, on the CPU, in the data pipeline;
``PackInputs`` stores it as ``data_sample.mask`` (a CPU bool tensor). mmengine's data
preprocessors move every tensor of a data sample to the training device, but the
backbone plans its token grouping from the mask on the CPU, and reading a device mask
back would stall the GPU every step. ``GreenMIMDataPreprocessor`` (the default data
preprocessor of the ``GreenMIM`` algorithm) therefore leaves the masks where this
transform put them: the device only ever receives the (B, L) copy the loss needs.
"""
from typing import Optional

from mmcv.transforms import BaseTransform
from mmpretrain.registry import TRANSFORMS

from ..ops.masking import num_visible_units, random_unit_masks, unit_grid


@TRANSFORMS.register_module()
class GreenMIMMaskGenerator(BaseTransform):
    """Draw a random mask over the mask units of the (already cropped) image.

    mmpretrain's ``SimMIMMaskGenerator`` is close but does not fit: it rounds the
    masked count up (``ceil(L * ratio)``) instead of keeping ``int(L * (1 - ratio))``
    visible units, needs a square size fixed in the config, and expands the mask to
    the token grid of the first stage. This one reads the size from the image.

    The mask is drawn with :func:`greenmim_mm.ops.masking.random_unit_masks` from
    torch's global generator, which mmengine seeds in every dataloader worker
    (``randomness=dict(seed=...)``); ``torch.manual_seed`` makes it reproducible.

    **Required Keys:**

    - img

    **Added Keys:**

    - mask (np.ndarray): ``(H / mask_unit, W / mask_unit)`` bool, True = masked.

    Args:
        mask_ratio: Fraction of mask units hidden from the encoder, in (0, 1).
            Defaults to 0.75 (the paper).
        mask_unit: Side of a mask unit in pixels, the encoder's total stride
            (32 for Swin and Twins with patch size 4). Defaults to 32.
    """

    def __init__(self, mask_ratio: float = 0.75, mask_unit: int = 32) -> None:
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(
                f'mask_ratio must lie in the open interval (0, 1), got {mask_ratio}: '
                'the paper uses 0.75.')
        if not isinstance(mask_unit, int) or mask_unit <= 0:
            raise ValueError(
                f'mask_unit must be a positive number of pixels, got {mask_unit!r}: '
                'use the encoder stride, 32 for Swin/Twins with patch size 4.')
        self.mask_ratio = mask_ratio
        self.mask_unit = mask_unit

    def transform(self, results: dict) -> Optional[dict]:
        """Add ``results['mask']``, a ``(Hu, Wu)`` bool array (True = masked)."""
        # a deferred crop (decoded on the device) gives its size; otherwise the image
        height, width = results.get('crop_size') or results['img'].shape[:2]
        grid = unit_grid((height, width), self.mask_unit)
        num_visible = num_visible_units(grid[0] * grid[1], self.mask_ratio)
        results['mask'] = random_unit_masks(1, grid, num_visible)[0].numpy()
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(mask_ratio={self.mask_ratio}, '
                f'mask_unit={self.mask_unit})')
