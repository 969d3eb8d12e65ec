"""Pretraining on your own folder of images (``ImageFolderDataset`` and the folder demo
config): recursive, any common format and size, bad files skipped with one warning
each and counted, never a crash. (A folder without a readable image is one of the bad
inputs of ``tests/tools/test_bad_input.py``.)"""
import logging
import os
import os.path as osp
from typing import Dict

import numpy as np
import pytest
from PIL import Image

from greenmim_mm.datasets import DEMO_PHOTOS, load_rgb_image
from greenmim_mm.datasets.demo import skimage_data_dir
from greenmim_cli.launch import prepare_train, train

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FOLDER_CFG = osp.join(REPO_ROOT,
                      'configs/pretrain/greenmim_swin-demo-w4_1xb16-400it_folder-128px.py')
BAD = ('empty.jpg', 'text.png', 'sub/truncated.jpg')


@pytest.fixture(scope='module')
def photo_folder(tmp_path_factory) -> Dict[str, object]:
    """The demo photographs written as a user's folder: nested sub-folders, several
    formats, modes and sizes (down to 20 px), upper-case extensions, plus a zero-byte
    .jpg, a text file named .png, a truncated JPEG and files that are not images."""
    root = str(tmp_path_factory.mktemp('my_photos'))
    formats = [('a/{}.JPG', 'RGB'), ('a/b/{}.png', 'RGBA'), ('{}.webp', 'L'),
               ('c/{}.bmp', 'P'), ('c/d/e/{}.gif', 'P'), ('{}.tiff', 'RGB')]
    good = []
    for i, name in enumerate(sorted(DEMO_PHOTOS)):
        pixels = load_rgb_image(osp.join(skimage_data_dir(), DEMO_PHOTOS[name]))
        if i % 3 == 2:  # some small and oddly shaped ones
            pixels = pixels[:20 + 7 * i, :40]
        pattern, mode = formats[i % len(formats)]
        path = osp.join(root, pattern.format(name))
        os.makedirs(osp.dirname(path), exist_ok=True)
        Image.fromarray(pixels).convert(mode).save(path)
        good.append(path)
    open(osp.join(root, 'empty.jpg'), 'wb').close()
    with open(osp.join(root, 'text.png'), 'w') as f:
        f.write('not an image')
    os.makedirs(osp.join(root, 'sub'))
    with open(good[0], 'rb') as f:  # a JPEG cut after its header: fails when decoded
        data = f.read()
    with open(osp.join(root, 'sub', 'truncated.jpg'), 'wb') as f:
        f.write(data[:len(data) // 3])
    for other in ('notes.txt', 'sub/.DS_Store'):
        with open(osp.join(root, other), 'w') as f:
            f.write('x')
    return dict(root=root, good=good)


def folder_dataset(root: str):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS
    cfg = Config.fromfile(FOLDER_CFG)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=root))


def test_folder_lists_every_image_and_skips_bad_files(photo_folder, monkeypatch):
    """Every image is listed, recursively; each bad file gets one warning naming it,
    the count is logged; a file that only fails when decoded is replaced by another
    image, with one warning however often it is drawn."""
    messages = []
    monkeypatch.setattr('greenmim_mm.datasets.image_folder.print_log',
                        lambda msg, **kwargs: messages.append(
                            (kwargs.get('level', logging.INFO), msg)))
    dataset = folder_dataset(photo_folder['root'])
    paths = [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]
    assert set(paths) == set(photo_folder['good']) | {
        osp.join(photo_folder['root'], 'sub', 'truncated.jpg')}  # its header is fine
    warnings = [m for level, m in messages if level == logging.WARNING]
    assert len(warnings) == 2
    for name, problem in (('empty.jpg', 'empty file'), ('text.png', 'not an image')):
        assert any(osp.join(photo_folder['root'], name) in w and problem in w
                   for w in warnings), warnings
    listed = f'{len(DEMO_PHOTOS) + 1} images in'  # the photographs + the truncated one
    assert any(listed in m and '2 unreadable or empty files skipped' in m
               for _, m in messages), messages

    index = paths.index(osp.join(photo_folder['root'], 'sub', 'truncated.jpg'))
    for _ in range(3):
        sample = dataset[index]
        assert tuple(sample['inputs'].shape) == (3, 128, 128)
        assert sample['data_samples'].mask.shape == (4, 4)
    decode_warnings = [m for level, m in messages
                       if level == logging.WARNING and 'cannot be decoded' in m]
    assert len(decode_warnings) == 1 and 'truncated.jpg' in decode_warnings[0]


def test_every_image_gives_a_crop(photo_folder):
    """Any format, mode and size becomes a 128 px RGB crop with its unit mask."""
    dataset = folder_dataset(photo_folder['root'])
    for i in range(len(dataset)):
        sample = dataset[i]
        assert tuple(sample['inputs'].shape) == (3, 128, 128), dataset.get_data_info(i)
        assert np.isfinite(sample['inputs'].numpy()).all()


def test_pretrain_on_a_folder_in_one_command(photo_folder, tmp_path, monkeypatch, capfd):
    """``tools/train.py <folder config> --data-root DIR`` (shortened to 2 iterations in
    the training process) trains and writes its checkpoint."""
    monkeypatch.setenv('LOCAL_RANK', '0')
    train(prepare_train([
        FOLDER_CFG, '--data-root', photo_folder['root'], '--work-dir', str(tmp_path),
        '--cfg-options', 'train_cfg.max_iters=2', 'train_dataloader.batch_size=4',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'custom_hooks=[]']))
    assert (tmp_path / 'iter_2.pth').exists()
    assert 'unreadable or empty files skipped' in capfd.readouterr().out
