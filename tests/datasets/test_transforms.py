"""GreenMIMMaskGenerator: exact visible counts, packing, and clear errors."""
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmpretrain.registry import TRANSFORMS

import greenmim_mm  # noqa: F401  (registers the transform)
from greenmim_mm.datasets import GreenMIMMaskGenerator

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def draw(height: int, width: int, **kwargs) -> np.ndarray:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    return GreenMIMMaskGenerator(**kwargs)(dict(img=image))['mask']


@pytest.mark.parametrize('size, ratio', [
    ((224, 224), 0.75),  # the paper: 49 units, 12 visible
    ((224, 224), 0.9),  # int(49 * 0.1) = 4 (rounds down, never up)
    ((128, 96), 0.5),  # non-square: 4 x 3 units
    ((64, 64), 0.6),  # int(4 * 0.4) = 1
    ((192, 192), 0.6),  # SimMIM's setting: 36 units, int(36 * 0.4) = 14
])
def test_exact_visible_count(size, ratio):
    grid = (size[0] // 32, size[1] // 32)
    expected = int(grid[0] * grid[1] * (1 - ratio))
    for seed in range(5):
        torch.manual_seed(seed)
        mask = draw(*size, mask_ratio=ratio)
        assert mask.shape == grid and mask.dtype == bool
        assert int((~mask).sum()) == expected


def test_other_unit_size():
    mask = draw(64, 96, mask_unit=16, mask_ratio=0.75)
    assert mask.shape == (4, 6) and int((~mask).sum()) == 6


def test_masks_are_random_and_seeded_by_torch():
    """Drawn from torch's global generator (which mmengine seeds in every worker):
    the same torch seed gives the same masks, whatever numpy's state."""
    torch.manual_seed(0)
    first = [draw(224, 224) for _ in range(4)]
    assert len({m.tobytes() for m in first}) == 4
    torch.manual_seed(0)
    np.random.seed(123)
    assert all((m == draw(224, 224)).all() for m in first)


def test_packed_as_bool_tensor_on_cpu():
    pipeline = Compose([
        TRANSFORMS.build(dict(type='GreenMIMMaskGenerator', mask_ratio=0.75)),
        TRANSFORMS.build(dict(type='PackInputs')),
    ])
    packed = pipeline(dict(img=np.zeros((96, 128, 3), dtype=np.uint8)))
    mask = packed['data_samples'].mask
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool
    assert mask.shape == (3, 4) and mask.device.type == 'cpu'
    assert int((~mask).sum()) == 3
    assert packed['inputs'].shape == (3, 96, 128)


def test_repr():
    assert repr(GreenMIMMaskGenerator(0.6, 16)) == \
        'GreenMIMMaskGenerator(mask_ratio=0.6, mask_unit=16)'


def test_size_not_multiple_of_unit():
    with pytest.raises(ValueError, match=r'100x224 is not divisible by the mask unit '
                       r'32 px: resize or crop the input to a multiple of 32'):
        draw(100, 224)


@pytest.mark.parametrize('ratio', [0.0, 1.0, -0.25, 1.5])
def test_ratio_out_of_range(ratio):
    with pytest.raises(ValueError, match=r'mask_ratio must lie in the open interval '
                       r'\(0, 1\), got'):
        GreenMIMMaskGenerator(mask_ratio=ratio)


def test_ratio_leaving_nothing_visible():
    with pytest.raises(ValueError, match='leaves no visible unit out of 4: lower the '
                       'ratio or use a larger image'):
        draw(64, 64, mask_ratio=0.8)


@pytest.mark.parametrize('unit', [0, -32, 32.0])
def test_bad_unit(unit):
    with pytest.raises(ValueError, match='mask_unit must be a positive number of '
                       'pixels'):
        GreenMIMMaskGenerator(mask_unit=unit)
