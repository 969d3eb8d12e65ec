"""TensorRandomResizedCrop: mmpretrain's boxes from the same random stream, Pillow's
pixels (>= 50 dB PSNR on the boxes it draws), clear errors."""
import os.path as osp

import cv2
import numpy as np
import pytest
from mmcv.transforms import Compose

import greenmim_mm  # noqa: F401  (registers the transform)
from greenmim_mm.datasets import DEMO_PHOTOS, TensorRandomResizedCrop
from greenmim_mm.datasets.demo import load_rgb_image

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64))**2)
    return float('inf') if error == 0 else 10 * np.log10(255.0**2 / error)


@pytest.fixture(scope='module')
def jpegs(tmp_path_factory):
    """Four of scikit-image's photographs as JPEGs of ImageNet-like size."""
    from skimage import data

    folder = tmp_path_factory.mktemp('jpegs')
    paths = []
    for name in ('astronaut', 'coffee', 'chelsea', 'rocket'):
        image = load_rgb_image(osp.join(data.data_dir, DEMO_PHOTOS[name]))
        path = str(folder / f'{name}.jpg')
        cv2.imwrite(path, image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def crops(crop: dict, paths, seeds) -> tuple:
    """The crops of ``paths`` for each numpy seed, and numpy's state after each."""
    pipeline = Compose([dict(type='LoadImageFromFile'), crop])
    images, states = [], []
    for seed in seeds:
        np.random.seed(seed)
        for path in paths:
            images.append(pipeline(dict(img_path=path))['img'])
        states.append(np.random.get_state()[1].copy())
    return images, states


@pytest.mark.parametrize('scale, interpolation, ratio', [
    (224, 'bicubic', (0.2, 1.0)),  # MAE's and GreenMIM's
    (128, 'bicubic', (0.2, 1.0)),  # the demo's size
    (192, 'bilinear', (0.67, 1.0)),  # SimMIM's ranges
])
def test_same_boxes_same_pixels_as_pillow(jpegs, scale, interpolation, ratio):
    common = dict(scale=scale, crop_ratio_range=ratio, interpolation=interpolation)
    seeds = range(6)
    reference, ref_states = crops(dict(type='RandomResizedCrop', backend='pillow',
                                       **common), jpegs, seeds)
    tensor, states = crops(dict(type='TensorRandomResizedCrop', **common), jpegs, seeds)
    for ref_state, state in zip(ref_states, states):
        assert (ref_state == state).all()  # the same draws from numpy's stream
    for ref, out in zip(reference, tensor):
        assert out.shape == ref.shape == (scale, scale, 3) and out.dtype == np.uint8
        assert psnr(ref, out) >= 50.0
    # and the crops differ between draws (a test that would catch a fixed box)
    assert psnr(tensor[0], tensor[len(jpegs)]) < 30.0


def test_channel_order_is_kept():
    """BGR in, BGR out: the data preprocessor's to_rgb still turns it around."""
    image = np.zeros((64, 80, 3), dtype=np.uint8)
    image[..., 0] = 200  # blue in BGR
    out = TensorRandomResizedCrop(scale=32)(dict(img=image))
    assert out['img'].shape == (32, 32, 3) and out['img_shape'] == (32, 32, 3)
    assert (out['img'][..., 0] == 200).all() and (out['img'][..., 1:] == 0).all()


def test_a_channel_reversed_view_crops_like_its_copy():
    """ImageFolderDataset hands over RGB read as BGR, a view with a negative stride
    (``[..., ::-1]``): the crop takes it and gives the pixels of its contiguous copy."""
    rgb = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    view = rgb[..., ::-1]
    assert view.strides[2] < 0
    np.random.seed(3)
    out = TensorRandomResizedCrop(scale=32)(dict(img=view))['img']
    np.random.seed(3)
    expected = TensorRandomResizedCrop(scale=32)(dict(img=view.copy()))['img']
    np.testing.assert_array_equal(out, expected)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="interpolation='lanczos'"):
        TensorRandomResizedCrop(scale=32, interpolation='lanczos')
    with pytest.raises(ValueError, match='drop to_float32'):
        TensorRandomResizedCrop(scale=32)(dict(img=np.zeros((40, 40, 3), np.float32)))
