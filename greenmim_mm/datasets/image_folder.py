"""``ImageFolderDataset``: every image under a folder, for pretraining on your own data.

mmpretrain's ``CustomDataset`` (``with_label=False``) already lists a folder recursively
by file extension; this subclass makes it safe on whatever a user's folder holds:

* **more formats**: JPEG, PNG, BMP, GIF, TIFF, WebP, PPM/PGM, any case of the extension;
  the pipeline's ``LoadImageFromFile`` decodes with Pillow (``imdecode_backend='pillow'``,
  which reads them all, where OpenCV cannot read GIF) unless the config says otherwise;
  grayscale, palette and RGBA images become RGB; any size (the crop resizes);
* **bad files are skipped, never a crash**: when the folder is listed, every file's
  header is read (not its pixels); an empty file, or one Pillow does not recognise as
  an image (a text file named ``.png``), is skipped with one warning naming it, and
  the log says how many images were found and how many files skipped. A file that
  passes that check and still fails to decode while training (truncated data) is
  skipped too: ``LoadImageFromFile(ignore_empty=True)`` gives None, this dataset warns
  once for that file, and mmengine's ``BaseDataset`` draws another image in its place;
* **a folder without any readable image is an error** that says so (a
  :class:`~greenmim_mm.errors.UsageError`: one line from the tools).
"""
import logging
import os.path as osp
from typing import List, Optional, Sequence, Set

from mmengine.logging import print_log
from mmpretrain.datasets import CustomDataset
from mmpretrain.registry import DATASETS

from ..errors import UsageError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.jpe', '.png', '.bmp', '.gif', '.tif', '.tiff',
                    '.webp', '.ppm', '.pgm', '.pbm', '.pnm')


def image_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a readable image (None if its header is one Pillow reads)."""
    from PIL import Image, UnidentifiedImageError

    try:
        if osp.getsize(path) == 0:
            return 'empty file (0 bytes)'
        with Image.open(path) as image:  # reads the header only
            image.size  # noqa: B018
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f'not an image Pillow can read ({type(error).__name__}: {error})'
    return None


@DATASETS.register_module()
class ImageFolderDataset(CustomDataset):
    """All images under ``data_root`` (recursively), without labels.

    Args:
        data_root: the folder of images (sub-folders included).
        extensions: file extensions to take (compared in lower case).
        check_images: read every file's header when listing (skips non-images early;
            False lists by extension only, and bad files are skipped when loaded).
        pipeline: the transforms; a ``LoadImageFromFile`` in it defaults to
            ``ignore_empty=True, imdecode_backend='pillow'`` (see the module docstring).
        **kwargs: ``CustomDataset``'s other arguments (``data_prefix``, ...).
    """

    def __init__(self, data_root: str = '', extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 check_images: bool = True, pipeline: Sequence = (), **kwargs) -> None:
        if not data_root and not kwargs.get('data_prefix'):
            raise UsageError('ImageFolderDataset needs a folder; set it with --data-root '
                             'DIR (or train_dataloader.dataset.data_root=DIR)')
        self.check_images = check_images
        self._warned: Set[str] = set()
        pipeline = [dict(t, **{k: v for k, v in (('ignore_empty', True),
                                                  ('imdecode_backend', 'pillow'))
                              if k not in t})
                    if isinstance(t, dict) and t.get('type') == 'LoadImageFromFile' else t
                    for t in pipeline]
        super().__init__(data_root=data_root, with_label=False, extensions=extensions,
                         pipeline=pipeline, **kwargs)

    def _find_samples(self) -> List[str]:
        if not osp.isdir(self.img_prefix):
            raise UsageError(f'image folder not found: {self.img_prefix}; give an existing '
                             'folder with --data-root DIR')
        try:
            return super()._find_samples()
        except RuntimeError as error:  # mmpretrain: "Found 0 files in subfolders of"
            raise UsageError(
                f'no image file in {self.img_prefix} (or its sub-folders); put images '
                f'there ({", ".join(IMAGE_EXTENSIONS)}) or give another folder with '
                '--data-root DIR') from error

    def load_data_list(self) -> List[dict]:
        """The image files of the folder, without the unreadable ones (each warned)."""
        data_list = super().load_data_list()
        readable, skipped = [], 0
        for info in data_list:
            problem = image_problem(info['img_path']) if self.check_images else None
            if problem is None:
                readable.append(info)
            else:
                skipped += 1
                self._warn(info['img_path'], problem)
        if not readable:
            raise UsageError(
                f'no readable image in {self.img_prefix}: all {skipped} image files are '
                'empty or unreadable (see the warnings above); put valid image files '
                'there or give another folder with --data-root DIR')
        print_log(f'ImageFolderDataset: {len(readable)} images in {self.img_prefix}'
                  + (f', {skipped} unreadable or empty files skipped' if skipped else ''),
                  logger='current')
        return readable

    def _warn(self, path: str, problem: str) -> None:
        if path not in self._warned:  # one warning per file (per process)
            self._warned.add(path)
            print_log(f'skipping {path}: {problem}', logger='current',
                      level=logging.WARNING)

    def prepare_data(self, idx: int):
        """The pipeline's result; a file that fails to decode gives None (mmengine's
        ``BaseDataset`` then takes another image) after one warning naming it."""
        data = super().prepare_data(idx)
        if data is None:
            self._warn(self.get_data_info(idx)['img_path'],
                       'cannot be decoded (truncated or corrupt); another image is used')
        return data
