"""GreenMIMDemoDataset: scikit-image's photographs, offline, with clear errors."""
import shutil

import numpy as np
import pytest
from mmpretrain.registry import DATASETS

import greenmim_mm  # noqa: F401  (registers the dataset)
from greenmim_mm.datasets import DEMO_PHOTOS, GreenMIMDemoDataset, load_rgb_image
from greenmim_mm.datasets.demo import skimage_data_dir

PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.2, 1.0)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='GreenMIMMaskGenerator', mask_ratio=0.75),
    dict(type='PackInputs'),
]

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def test_lists_every_photo_and_loads_through_a_pipeline():
    dataset = DATASETS.build(dict(type='GreenMIMDemoDataset', pipeline=PIPELINE))
    assert len(dataset) == len(DEMO_PHOTOS)
    for index in range(len(dataset)):
        item = dataset[index]
        assert item['inputs'].shape == (3, 64, 64)
        assert item['data_samples'].mask.shape == (2, 2)


def test_names_select_photos():
    dataset = GreenMIMDemoDataset(names=['chelsea', 'camera'])
    assert [info['img_path'].rsplit('/', 1)[1] for info in dataset] == \
        ['chelsea.png', 'camera.png']


def test_grayscale_photo_is_read_as_rgb():
    image = load_rgb_image(f'{skimage_data_dir()}/camera.png')
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8


def test_unknown_name():
    with pytest.raises(ValueError, match=r"Unknown demo photographs \['lena'\]: choose "
                       r"from \['astronaut'"):
        GreenMIMDemoDataset(names=['astronaut', 'lena'])


def test_corrupt_photo(tmp_path):
    (tmp_path / 'astronaut.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'garbage' * 10)
    with pytest.raises(ValueError, match=r"Demo photograph 'astronaut': Cannot decode "
                       r"the image .*astronaut.png.*corrupt or not an image"):
        GreenMIMDemoDataset(names=['astronaut'], img_dir=str(tmp_path))


def test_truncated_photo(tmp_path):
    data = open(f'{skimage_data_dir()}/coffee.png', 'rb').read()
    (tmp_path / 'coffee.png').write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='corrupt or not an image'):
        load_rgb_image(str(tmp_path / 'coffee.png'))


def test_missing_photo(tmp_path):
    shutil.copy(f'{skimage_data_dir()}/chelsea.png', tmp_path)
    GreenMIMDemoDataset(names=['chelsea'], img_dir=str(tmp_path))  # present: fine
    with pytest.raises(FileNotFoundError, match=r"Image file not found: .*coffee.png"):
        GreenMIMDemoDataset(names=['chelsea', 'coffee'], img_dir=str(tmp_path))
