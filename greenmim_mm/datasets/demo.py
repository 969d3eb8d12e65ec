"""A tiny dataset of real photographs for the CPU demo: scikit-image's sample images.

scikit-image ships a handful of photographs inside its package (``skimage.data``), so
the demo needs no download and no dataset on disk. They are listed by name here and
read from the package data directory with ``LoadImageFromFile`` like any image folder;
the list is checked once, when the dataset is built, so a missing or corrupt file
fails with a message that names it instead of deep inside a dataloader worker.
"""
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

# The 17 photographs (not synthetic patterns) in ``skimage.data``'s package directory
# (no download); the grayscale ones are read as three equal channels.
DEMO_PHOTOS = {
    'astronaut': 'astronaut.png',
    'brick': 'brick.png',
    'camera': 'camera.png',
    'cell': 'cell.png',
    'chelsea': 'chelsea.png',
    'clock': 'clock_motion.png',
    'coffee': 'coffee.png',
    'coins': 'coins.png',
    'grass': 'grass.png',
    'gravel': 'gravel.png',
    'hubble_deep_field': 'hubble_deep_field.jpg',
    'immunohistochemistry': 'ihc.png',
    'moon': 'moon.png',
    'motorcycle': 'motorcycle_left.png',
    'retina': 'retina.jpg',
    'rocket': 'rocket.jpg',
    'text': 'text.png',
}


def load_rgb_image(path: str) -> np.ndarray:
    """Decode an image file into an ``(H, W, 3)`` uint8 RGB array, with clear errors.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not an image PIL can decode (truncated, corrupt or
            another format).
    """
    from PIL import Image, UnidentifiedImageError

    if not osp.isfile(path):
        raise FileNotFoundError(f'Image file not found: {path!r}. Check the path.')
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later
            return np.asarray(image.convert('RGB'))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f'Cannot decode the image {path!r} ({error}): the file is corrupt or not '
            'an image. Replace it with a valid PNG/JPEG file.') from error


def skimage_data_dir() -> str:
    """The directory of scikit-image's bundled sample images."""
    import skimage.data

    return skimage.data.data_dir


@DATASETS.register_module()
class GreenMIMDemoDataset(BaseDataset):
    """Photographs bundled with scikit-image, for a pretraining run on a laptop.

    Each item is ``dict(img_path=...)``; the pipeline loads it with
    ``LoadImageFromFile`` as for any image folder. There are no labels.

    Args:
        names: Which photographs to use, keys of :data:`DEMO_PHOTOS`. Defaults to all.
        img_dir: Directory holding the files of :data:`DEMO_PHOTOS`. Defaults to
            scikit-image's package data directory.
        **kwargs: Passed on to mmpretrain's ``BaseDataset`` (``pipeline``, ...).
    """

    def __init__(self,
                 names: Optional[Sequence[str]] = None,
                 img_dir: Optional[str] = None,
                 **kwargs) -> None:
        names = list(DEMO_PHOTOS) if names is None else list(names)
        unknown = sorted(set(names) - set(DEMO_PHOTOS))
        if unknown or not names:
            raise ValueError(
                f'Unknown demo photographs {unknown or names}: choose from '
                f'{sorted(DEMO_PHOTOS)}.')
        self.names = names
        self.img_dir = img_dir
        super().__init__(ann_file='', **kwargs)

    def load_data_list(self) -> List[dict]:
        """List the photographs, checking that each one decodes."""
        img_dir = self.img_dir or skimage_data_dir()
        data_list = []
        for name in self.names:
            path = osp.join(img_dir, DEMO_PHOTOS[name])
            try:
                load_rgb_image(path)
            except (FileNotFoundError, ValueError) as error:
                raise type(error)(
                    f'Demo photograph {name!r}: {error} If it is scikit-image\'s copy, '
                    'reinstall scikit-image.') from error
            data_list.append(dict(img_path=path))
        return data_list
