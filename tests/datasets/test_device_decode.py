"""Decode and crop on the device (tested on the CPU, the same code with the CPU
decoder): the crops, flips and masks of the CPU pipeline from the same random streams,
the same pixels, and bad files skipped or decoded in the worker."""
import os.path as osp
import warnings

import cv2
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmpretrain.registry import MODELS

import greenmim_mm  # noqa: F401  (registers the transforms)
from greenmim_lab import REPO_ROOT
from greenmim_mm.datasets import DEMO_PHOTOS, decode_crop_batch, greenmim_collate
from greenmim_mm.datasets.demo import load_rgb_image

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')
CONFIGS = osp.join(REPO_ROOT, 'configs/_base_/datasets')
SWIN = dict(type='GreenMIMSwinTransformer', arch=dict(embed_dims=32, depths=[1, 1, 1, 1],
                                                      num_heads=[1, 2, 2, 4]),
            window_size=7)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    error = torch.mean((a.double() - b.double())**2).item()
    return float('inf') if error == 0 else 10 * np.log10(255.0**2 / error)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp('images')
    paths = []
    for name in ('astronaut', 'coffee', 'chelsea', 'rocket', 'motorcycle'):
        image = load_rgb_image(osp.join(data.data_dir, DEMO_PHOTOS[name]))[..., ::-1]
        path = str(folder / f'{name}.jpg')
        cv2.imwrite(path, np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    png = str(folder / 'astronaut.png')  # not a JPEG: decoded in the worker
    cv2.imwrite(png, np.ascontiguousarray(load_rgb_image(
        osp.join(data.data_dir, DEMO_PHOTOS['astronaut']))[..., ::-1]))
    rotated = str(folder / 'rotated.jpg')  # EXIF orientation 6: cv2 rotates it
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(paths[1]).crop((0, 0, 400, 300)).save(rotated, exif=exif, quality=90)
    return paths + [png, rotated]


def run(config: str, paths, seed: int) -> list:
    pipeline = Compose(Config.fromfile(osp.join(CONFIGS, config)).train_pipeline)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return [pipeline(dict(img_path=path)) for path in paths]


def test_same_crops_flips_masks_and_pixels_as_the_cpu_pipeline(files):
    for seed in range(3):
        cpu = run('imagenet_bs256_greenmim.py', files, seed)
        deferred = run('imagenet_bs256_greenmim_device-decode.py', files, seed)
        assert deferred[0]['inputs'].dim() == 1  # the JPEG's bytes travel
        assert deferred[-2]['inputs'].shape[0] == 3  # the PNG's pixels
        assert deferred[-1]['inputs'].shape[1:] == (400, 300)  # rotated, decoded
        images = decode_crop_batch([s['inputs'] for s in deferred],
                                   [s['data_samples'] for s in deferred], 'cpu')
        assert images.shape == (len(files), 3, 224, 224) and images.dtype == torch.uint8
        flips = []
        for reference, sample, image in zip(cpu, deferred, images):
            assert torch.equal(reference['data_samples'].mask,
                               sample['data_samples'].mask)
            assert psnr(reference['inputs'], image) >= 50.0
            flips.append(sample['data_samples'].flip)
        assert len(set(flips)) == 2  # both flips drawn over the seeds and files


def test_collate_and_preprocessor_decode_on_the_training_device(files):
    """greenmim_collate keeps the bytes as a list and plans from the crop size; the
    data preprocessor decodes there: the inputs of the CPU pipeline's batch."""
    preprocessor = MODELS.build(dict(type='GreenMIMDataPreprocessor',
                                     mean=[123.675, 116.28, 103.53],
                                     std=[58.395, 57.12, 57.375], to_rgb=True))
    cpu = greenmim_collate(run('imagenet_bs256_greenmim.py', files, 7), backbone=SWIN)
    deferred = greenmim_collate(run('imagenet_bs256_greenmim_device-decode.py', files, 7),
                                backbone=SWIN)
    assert isinstance(deferred['inputs'], list)
    expected = preprocessor(cpu, True)
    out = preprocessor(deferred, True)
    assert out['inputs'].shape == expected['inputs'].shape
    torch.testing.assert_close(out['inputs'], expected['inputs'], atol=0.2, rtol=0)
    for a, b in zip(out['plan'].stages, expected['plan'].stages):
        assert torch.equal(a.attention[(7, 0)].token_slot, b.attention[(7, 0)].token_slot)


def test_grayscale_jpegs_and_same_size_worker_decodes_still_crop(files, tmp_path):
    """A grayscale JPEG decodes to 3 channels on the device; a batch whose images were
    all decoded in the worker at one size (PNGs here) is still cropped there, not
    stacked uncropped."""
    preprocessor = MODELS.build(dict(type='GreenMIMDataPreprocessor',
                                     mean=[123.675, 116.28, 103.53],
                                     std=[58.395, 57.12, 57.375], to_rgb=True))
    gray = str(tmp_path / 'gray.jpg')
    cv2.imwrite(gray, cv2.cvtColor(cv2.imread(files[0]), cv2.COLOR_BGR2GRAY))
    pngs = []
    for i in range(2):
        pngs.append(str(tmp_path / f'same_{i}.png'))
        cv2.imwrite(pngs[-1], cv2.imread(files[i])[:300, :400])  # one size
    for batch_files in ([gray, files[0]], pngs):
        samples = run('imagenet_bs256_greenmim_device-decode.py', batch_files, 3)
        out = preprocessor(greenmim_collate(samples, backbone=SWIN), True)
        assert out['inputs'].shape == (2, 3, 224, 224)


def test_truncated_and_unreadable_files_are_skipped_with_one_warning(files, tmp_path):
    from mmpretrain.registry import TRANSFORMS

    load = TRANSFORMS.build(dict(type='LoadJPEGBytes'))
    data = open(files[0], 'rb').read()
    truncated, text = str(tmp_path / 'cut.jpg'), str(tmp_path / 'notes.jpg')
    open(truncated, 'wb').write(data[:len(data) // 2])
    open(text, 'w').write('not an image')
    for path, why in ((truncated, 'truncated JPEG'), (text, 'not a readable image')):
        with pytest.warns(UserWarning, match=f'Skipping image {path}: {why}') as record:
            assert load(dict(img_path=path)) is None
        assert len(record) == 1


def test_a_jpeg_that_fails_on_the_device_is_replaced_with_one_warning(files):
    samples = run('imagenet_bs256_greenmim_device-decode.py', files[:3], 0)
    inputs = [s['inputs'] for s in samples]
    corrupt = bytearray(inputs[1].numpy().tobytes())
    middle = len(corrupt) // 2
    corrupt[middle:middle + 64] = b'\xff' * 64  # passes the worker's checks
    inputs[1] = torch.frombuffer(corrupt, dtype=torch.uint8)
    data_samples = [s['data_samples'] for s in samples]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        images = decode_crop_batch(inputs, data_samples, 'cpu')
    ours = [str(w.message) for w in record if 'Skipping image' in str(w.message)]
    assert len(ours) == 1 and files[1] in ours[0]
    good = decode_crop_batch([inputs[0], inputs[2]], [data_samples[0], data_samples[2]],
                             'cpu')
    assert torch.equal(images[0], good[0]) and torch.equal(images[2], good[1])
    # another image of the batch takes its place
    assert any(torch.equal(images[1], image) for image in good)


def test_reconstruction_hook_keeps_decoded_pictures(files):
    """The pictures hook stores the batch it draws: JPEG bytes are decoded (on the CPU)
    into the crops the model trains on."""
    from types import SimpleNamespace

    from greenmim_mm.engine.hooks.reconstruction_hook import \
        ReconstructionVisualizationHook

    batch = greenmim_collate(run('imagenet_bs256_greenmim_device-decode.py', files[:3], 1))
    hook = ReconstructionVisualizationHook(interval=10, num_images=2)
    hook.before_train_iter(SimpleNamespace(iter=5), 0, batch)
    expected = decode_crop_batch(batch['inputs'][:2], batch['data_samples'][:2], 'cpu')
    assert torch.equal(hook._batch['inputs'], expected)
