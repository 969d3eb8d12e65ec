"""Reconstruction pictures: the panel, ``draw_reconstruction`` (what
tools/visualize_reconstruction.py runs), and the hook that logs the panel while
training."""
import os.path as osp
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from PIL import Image

import greenmim_mm  # noqa: F401  (registers the model and the hook)
from greenmim_mm.datasets.demo import skimage_data_dir
from greenmim_cli.reconstruct import draw_reconstruction
from greenmim_mm.errors import UsageError
from greenmim_mm.visualization import (COLUMNS, GAP, HEADER, MASK_GREY,
                                       reconstruction_panel, reconstruction_panels)

REPO = osp.join(osp.dirname(__file__), '..', '..')
DEMO_CONFIG = osp.abspath(osp.join(REPO, 'configs', 'pretrain',
                                   'greenmim_swin-demo-w4_1xb16-400it_photos-128px.py'))


def photo() -> str:
    """scikit-image's chelsea.png (looked up when a test runs: collecting this module
    must not need scikit-image, e.g. for the GPU check's ``-m cuda`` selection)."""
    return osp.join(skimage_data_dir(), 'chelsea.png')

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    """The demo config at 64 px (2 x 2 units, 1 visible; windows of 2 tokens so the
    2 x 2 last stage holds one) and a checkpoint of it."""
    root = tmp_path_factory.mktemp('tiny_demo')
    config = root / 'tiny_demo.py'
    config.write_text(f"_base_ = ['{DEMO_CONFIG}']\n"
                      'model = dict(backbone=dict(img_size=64, window_size=2))\n')
    cfg = Config.fromfile(str(config))
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    checkpoint = root / 'tiny.pth'
    torch.save(dict(meta=dict(), state_dict=model.state_dict()), checkpoint)
    return str(config), str(checkpoint)


def test_panel_layout():
    rng = np.random.default_rng(0)
    image, pred, recon = (rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
                          for _ in range(3))
    mask = np.array([[True, False, True], [False, True, True]])
    panel = reconstruction_panel(image, mask, pred, recon)
    assert panel.shape == (HEADER + 64, 5 * 96 + 4 * GAP, 3) and panel.dtype == np.uint8
    original, masked, prediction, reconstruction, pasted = (
        panel[HEADER:, k * (96 + GAP):k * (96 + GAP) + 96] for k in range(5))
    hidden = mask.repeat(32, 0).repeat(32, 1)
    assert (original == image).all() and (reconstruction == recon).all()
    assert (prediction == pred).all()
    assert (masked[hidden] == MASK_GREY).all()
    assert (masked[~hidden] == image[~hidden]).all()
    assert (pasted[hidden] == recon[hidden]).all()
    assert (pasted[~hidden] == image[~hidden]).all()
    for k in range(len(COLUMNS)):  # every column has its title
        assert (panel[:HEADER, k * (96 + GAP):k * (96 + GAP) + 96] < 255).any()
    assert reconstruction_panel(image, mask, pred, recon, labels=False).shape[0] == 64


def test_panel_of_a_pixel_prediction_has_four_pictures():
    """Without ``reconstruction`` (SimMIM predicts pixels): original, masked,
    prediction, prediction + visible units, under their own titles."""
    rng = np.random.default_rng(1)
    image, pred = (rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(2))
    mask = np.array([[True, False, True], [False, True, True]])
    panel = reconstruction_panel(image, mask, pred)
    assert panel.shape == (HEADER + 64, 4 * 96 + 3 * GAP, 3)
    prediction, pasted = (panel[HEADER:, k * (96 + GAP):k * (96 + GAP) + 96]
                          for k in (2, 3))
    hidden = mask.repeat(32, 0).repeat(32, 1)
    assert (prediction == pred).all()
    assert (pasted[hidden] == pred[hidden]).all() and (pasted[~hidden] == image[~hidden]).all()


@pytest.mark.parametrize('to_rgb', [True, False])
def test_perfect_prediction_draws_the_original(tiny_run, to_rgb, monkeypatch):
    """A BGR image as LoadImageFromFile loads it, through the data preprocessor (with
    or without its BGR -> RGB conversion) and a decoder that predicts the loss target
    exactly: the panel shows the image in RGB as original, as reconstruction and as
    reconstruction + visible (mean/std undone, channels in RGB order)."""
    cfg = Config.fromfile(tiny_run[0])
    cfg.model.data_preprocessor.to_rgb = to_rgb
    model = MODELS.build(cfg.model)
    monkeypatch.setattr(model, 'predict_pixels',
                        lambda images, mask=None, plan=None:
                        model.head.construct_target(images))
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rgb[:32, :32] = [250, 10, 120]  # a unit far from grey, channels far apart
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    sample = DataSample().set_mask(torch.tensor([[False, True], [True, True]]))
    panel = reconstruction_panel_of(model, bgr, sample)
    original, _, _, reconstruction, pasted = (
        panel[HEADER:, k * (64 + GAP):k * (64 + GAP) + 64] for k in range(5))
    np.testing.assert_array_equal(original, rgb)
    np.testing.assert_array_equal(reconstruction, rgb)
    np.testing.assert_array_equal(pasted, rgb)


def test_perfect_prediction_column_with_equal_unit_statistics(tiny_run, monkeypatch):
    """The prediction column uses the visible units' statistics: when every unit holds
    the same pixels (shuffled), those are every unit's, and a perfect decoder draws
    the original there too (to a grey level of rounding)."""
    model = MODELS.build(Config.fromfile(tiny_run[0]).model)
    monkeypatch.setattr(model, 'predict_pixels',
                        lambda images, mask=None, plan=None:
                        model.head.construct_target(images))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32 * 32, 3), dtype=np.uint8)
    units = [pixels[rng.permutation(32 * 32)].reshape(32, 32, 3) for _ in range(4)]
    rgb = np.concatenate([np.concatenate(units[:2], 1),  # 64, 64, 3: 2 x 2 units
                          np.concatenate(units[2:], 1)], 0)
    sample = DataSample().set_mask(torch.tensor([[False, True], [True, True]]))
    panel = reconstruction_panel_of(model, np.ascontiguousarray(rgb[..., ::-1]), sample)
    prediction = panel[HEADER:, 2 * (64 + GAP):2 * (64 + GAP) + 64]
    assert np.abs(prediction.astype(int) - rgb).max() <= 1


def reconstruction_panel_of(model, bgr: np.ndarray, sample) -> np.ndarray:
    """The panel of one ``(H, W, 3)`` BGR uint8 image, collated as the dataloader
    does (``PackInputs`` + ``default_collate``)."""
    inputs = torch.from_numpy(bgr).permute(2, 0, 1)[None].contiguous()  # 1, 3, H, W
    return reconstruction_panels(model, dict(inputs=inputs, data_samples=[sample]))


def test_draw_reconstruction_writes_the_panel(tiny_run, tmp_path):
    config, checkpoint = tiny_run
    out = tmp_path / 'sub' / 'cat.png'
    assert draw_reconstruction(config, checkpoint, photo(), out=str(out), seed=3) == out
    picture = np.asarray(Image.open(out))
    assert picture.shape == (HEADER + 64, 5 * 64 + 4 * GAP, 3)
    # the same seed draws the same mask: the same picture
    again = tmp_path / 'again.png'
    draw_reconstruction(config, checkpoint, photo(), out=str(again), seed=3)
    assert (np.asarray(Image.open(again)) == picture).all()
    # mask ratio 0.5 keeps 2 of the 4 units: half of the masked picture is grey
    draw_reconstruction(config, checkpoint, photo(), out=str(again), mask_ratio=0.5)
    masked = np.asarray(Image.open(again))[HEADER:, 64 + GAP:2 * 64 + GAP]
    assert (masked == MASK_GREY).all(-1).mean() == pytest.approx(0.5, abs=0.05)


def test_demo_photo_by_name_into_work_dirs(tiny_run, tmp_path, monkeypatch):
    """The README's example: a demo photograph by name, and without ``--out`` the
    panel goes to work_dirs/reconstructions/ (ignored by git)."""
    config, checkpoint = tiny_run
    monkeypatch.chdir(tmp_path)
    out = draw_reconstruction(config, checkpoint, 'chelsea')
    assert out == Path('work_dirs', 'reconstructions', 'chelsea.png')
    assert (tmp_path / out).is_file()
    with open(osp.join(REPO, '.gitignore')) as f:
        assert 'work_dirs/' in f.read().split()


def test_corrupt_image(tiny_run, tmp_path):
    config, checkpoint = tiny_run
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
    with pytest.raises(UsageError, match=r"Cannot decode the image .*broken.jpg.*"
                       'corrupt or not an image. Replace it'):
        draw_reconstruction(config, checkpoint, str(bad), out=str(tmp_path / 'x.png'))


def test_missing_files(tiny_run, tmp_path):
    config, checkpoint = tiny_run
    with pytest.raises(UsageError, match=r"Image file not found: .*nope.png.*Give an "
                       r"image file or the name of a demo photograph: astronaut, "):
        draw_reconstruction(config, checkpoint, str(tmp_path / 'nope.png'))
    with pytest.raises(UsageError, match=r"checkpoint file not found: .*none.pth"):
        draw_reconstruction(config, str(tmp_path / 'none.pth'), photo())


def test_bad_mask_ratio(tiny_run):
    config, checkpoint = tiny_run
    with pytest.raises(UsageError, match=r'mask_ratio must lie in the open interval'):
        draw_reconstruction(config, checkpoint, photo(), mask_ratio=1.2)


def test_size_not_multiple_of_unit(tiny_run):
    config, checkpoint = tiny_run
    with pytest.raises(UsageError, match='--size 80 is not a multiple of the mask unit '
                       '32 px: use e.g. --size 64 or --size 96'):
        draw_reconstruction(config, checkpoint, photo(), size=80)


def test_hook_logs_pictures_while_training(tiny_run, tmp_path):
    """Two training iterations of the demo config: pictures before, at 1 and at 2, as
    PNG files (LocalVisBackend) and in a TensorBoard event file."""
    config, _ = tiny_run
    cfg = Config.fromfile(config)
    cfg.work_dir = str(tmp_path)
    cfg.train_dataloader.update(batch_size=2, num_workers=0, persistent_workers=False)
    cfg.train_dataloader.dataset.names = ['astronaut', 'coffee']
    crop = cfg.train_dataloader.dataset.pipeline[1]
    assert crop.type == 'RandomResizedCrop'
    crop.scale = 64
    cfg.train_cfg.max_iters = 2
    cfg.param_scheduler = []
    cfg.custom_hooks = [
        dict(type='ReconstructionVisualizationHook', interval=1, num_images=2)]
    cfg.experiment_name = f'hook_{tmp_path.name}'  # unique visualizer instance
    runner = Runner.from_cfg(cfg)
    runner.train()
    image_dir = osp.join(runner.log_dir, 'vis_data', 'vis_image')
    for step in (0, 1, 2):
        path = osp.join(image_dir, f'reconstruction_{step}.png')
        picture = np.asarray(Image.open(path))
        assert picture.shape == (2 * (HEADER + 64) + GAP, 5 * 64 + 4 * GAP, 3)
    assert osp.isfile(osp.join(tmp_path, 'iter_2.pth'))
    events = [f for f in _walk(osp.join(runner.log_dir, 'vis_data'))
              if 'tfevents' in osp.basename(f)]
    assert events


def _walk(root):
    import os
    for folder, _, files in os.walk(root):
        yield from (osp.join(folder, f) for f in files)


def test_hook_arguments():
    from greenmim_mm.engine.hooks import ReconstructionVisualizationHook
    with pytest.raises(ValueError, match='interval and num_images must be positive'):
        ReconstructionVisualizationHook(interval=0)
