"""GreenMIM: the loss is MAE's masked-unit MSE, computed from visible pixels only."""
import os.path as osp

import numpy as np
import pytest
import torch
from helpers import random_masks as unit_masks
from mmengine.config import Config
from mmengine.dataset import default_collate
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.models.backbones import SwinTransformer
from mmpretrain.registry import DATASETS, MODELS
from mmpretrain.structures import DataSample

import greenmim_mm  # noqa: F401  (registers the algorithm)
from greenmim_mm.engine.schedules import resolved_schedule
from greenmim_mm.models.backbones import GreenMIMSwinTransformer

CONFIGS = osp.join(osp.dirname(__file__), '..', '..', 'configs', 'pretrain')
UNIT = 32
pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def tiny_model(mask_mode: str = 'sample', seed: int = 0):
    """GreenMIM with a 4-stage Swin of 16 channels and two blocks per stage."""
    torch.manual_seed(seed)
    model = MODELS.build(dict(
        type='GreenMIM',
        mask_mode=mask_mode,
        data_preprocessor=dict(
            mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
            to_rgb=True),
        backbone=dict(
            type='GreenMIMSwinTransformer',
            arch=dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2]),
            img_size=64, window_size=2, drop_path_rate=0.0, out_indices=(3, ),
            mask_unit=UNIT),
        neck=dict(type='GreenMIMDecoder', patch_size=UNIT, embed_dim=128,
                  decoder_embed_dim=16, decoder_num_heads=2),
        head=dict(type='MAEPretrainHead', norm_pix=True, patch_size=UNIT,
                  loss=dict(type='PixelReconstructionLoss', criterion='L2'))))
    model.init_weights()
    return model


def random_masks(batch: int, grid=(3, 3), num_visible: int = 2, seed: int = 0):
    """Masks of 96 px images (3 x 3 units), 2 visible units each."""
    return unit_masks(batch, grid, num_visible, seed)


def samples(mask: torch.Tensor):
    return [DataSample().set_mask(m) for m in mask]


def test_backbone_is_the_real_greenmim_swin():
    model = tiny_model()
    assert type(model.backbone) is GreenMIMSwinTransformer
    assert isinstance(model.backbone, SwinTransformer)
    assert type(model.data_preprocessor).__name__ == 'GreenMIMDataPreprocessor'


def test_loss_is_mse_on_normalised_pixels_of_masked_units():
    model = tiny_model()
    inputs = torch.randn(3, 3, 96, 96)
    mask = random_masks(3, seed=1)
    loss = model.loss(inputs, samples(mask))['loss']

    pred = model.predict_pixels(inputs, mask)  # B, 9, 32*32*3
    patches = inputs.reshape(3, 3, 3, UNIT, 3, UNIT).permute(0, 2, 4, 3, 5, 1)
    patches = patches.reshape(3, 9, UNIT * UNIT * 3)  # (row, col) units, (y, x, c)
    target = (patches - patches.mean(-1, keepdim=True)) / (
        patches.var(-1, keepdim=True, unbiased=True) + 1e-6).sqrt()
    per_unit = ((pred - target)**2).mean(-1)  # B, 9
    expected = per_unit[mask.flatten(1)].mean()
    torch.testing.assert_close(loss, expected)


def test_prediction_ignores_masked_pixels():
    model = tiny_model().eval()
    inputs = torch.randn(2, 3, 96, 96)
    mask = random_masks(2, seed=2)
    pixels = mask.repeat_interleave(UNIT, 1).repeat_interleave(UNIT, 2)[:, None]
    scrambled = torch.where(pixels, torch.randn_like(inputs) * 5, inputs)
    torch.testing.assert_close(model.predict_pixels(scrambled, mask),
                               model.predict_pixels(inputs, mask))


def test_every_parameter_gets_a_gradient():
    model = tiny_model()
    model.loss(torch.randn(2, 3, 96, 96), samples(random_masks(2)))['loss'].backward()
    missing = [name for name, p in model.named_parameters()
               if p.requires_grad and p.grad is None]
    assert not missing


def test_mask_modes():
    inputs = torch.zeros(4, 3, 96, 96)
    mask = random_masks(4, seed=3)
    per_sample = tiny_model('sample').unit_masks(inputs, samples(mask))
    assert torch.equal(per_sample, mask)
    shared = tiny_model('batch').unit_masks(inputs, samples(mask))
    assert torch.equal(shared, mask[:1].expand(4, 3, 3))
    # the batch-mode loss is the per-sample loss under the first mask for everyone
    images = torch.randn(4, 3, 96, 96)
    loss = tiny_model('batch').loss(images, samples(mask))['loss']
    first_for_all = samples(mask[:1].expand(4, 3, 3).contiguous())
    torch.testing.assert_close(loss, tiny_model('sample').loss(images, first_for_all)['loss'])
    assert not torch.allclose(loss, tiny_model('sample').loss(images, samples(mask))['loss'])


def test_bad_mask_mode():
    with pytest.raises(ValueError, match="mask_mode must be one of .*got 'image'"):
        tiny_model('image')


def test_preprocessor_keeps_masks_on_the_cpu():
    """The images move to the model's device, the masks stay where the pipeline made
    them (the 'meta' device stands in for a GPU)."""
    model = tiny_model()
    preprocessor = model.data_preprocessor.to(torch.device('meta'))
    mask = random_masks(2)
    batch = dict(inputs=torch.zeros(2, 3, 96, 96, dtype=torch.uint8),
                 data_samples=samples(mask))
    out = preprocessor(batch, True)
    assert out['inputs'].device.type == 'meta'
    for sample, expected in zip(out['data_samples'], mask):
        assert sample.mask.device.type == 'cpu' and torch.equal(sample.mask, expected)
    assert all('mask' in sample for sample in batch['data_samples'])  # input intact


def test_missing_mask():
    with pytest.raises(ValueError, match=r"add dict\(type='GreenMIMMaskGenerator'\) "
                       'before PackInputs'):
        tiny_model().loss(torch.zeros(1, 3, 64, 64), [DataSample()])


def test_mask_grid_must_cover_the_image():
    with pytest.raises(ValueError, match=r'Masks of 3x3 units of 32 px do not cover '
                       r'64x64 images: give GreenMIMMaskGenerator mask_unit=32'):
        tiny_model().loss(torch.zeros(1, 3, 64, 64), samples(random_masks(1)))


def test_non_square_images_are_refused_by_the_head():
    mask = random_masks(1, grid=(2, 3))
    with pytest.raises(ValueError, match='only patchifies square images, got 64x96'):
        tiny_model().loss(torch.zeros(1, 3, 64, 96), samples(mask))


def test_uneven_visible_counts():
    mask = random_masks(2)
    mask[1, 0, 0] = ~mask[1, 0, 0]
    with pytest.raises(ValueError, match='same number of visible units'):
        tiny_model().loss(torch.zeros(2, 3, 96, 96), samples(mask))


def test_reconstruct_returns_images():
    model = tiny_model()
    inputs = torch.randn(2, 3, 96, 96)
    image = model.reconstruct(inputs, samples(random_masks(2)))
    assert image.shape == inputs.shape and not image.requires_grad


@pytest.mark.parametrize('norm_pix', [True, False])
def test_perfect_prediction_reconstructs_the_input(norm_pix, monkeypatch):
    """A decoder that predicts the loss target exactly (per-unit normalised pixels
    with norm_pix) makes ``reconstruct`` return the input: the normalisation is
    undone with the input's own unit statistics, and units land where they belong."""
    model = tiny_model()
    model.head.norm_pix = norm_pix
    inputs = torch.randn(2, 3, 96, 96) * 3 + 1
    mask = random_masks(2)
    monkeypatch.setattr(model, 'predict_pixels',
                        lambda images, mask=None, plan=None:
                        model.head.construct_target(images))
    assert model.loss(inputs, samples(mask))['loss'] == 0  # it is the loss's target
    torch.testing.assert_close(model.reconstruct(inputs, samples(mask)), inputs,
                               rtol=1e-5, atol=1e-5)


def test_visible_statistics_depend_on_visible_pixels_only():
    """``statistics='visible'`` de-normalises with the visible units' mean and std: the
    picture is a function of what the encoder saw, so changing the masked pixels
    leaves it as it is (with the true unit statistics it changes)."""
    model = tiny_model().eval()
    inputs = torch.randn(2, 3, 96, 96)
    mask = random_masks(2)
    changed = inputs.clone()
    hidden = mask.repeat_interleave(UNIT, 1).repeat_interleave(UNIT, 2)  # B, H, W
    changed[hidden[:, None].expand_as(changed)] *= 5
    visible = [model.reconstruct(x, samples(mask), statistics='visible')
               for x in (inputs, changed)]
    torch.testing.assert_close(visible[0], visible[1])
    unit = [model.reconstruct(x, samples(mask)) for x in (inputs, changed)]
    assert not torch.allclose(unit[0], unit[1])
    with pytest.raises(ValueError, match="statistics must be 'unit' or 'visible'"):
        model.reconstruct(inputs, samples(mask), statistics='global')


def test_several_statistics_from_one_forward_pass(monkeypatch):
    """``statistics=('visible', 'unit')`` (the panels) gives each single call's image,
    from one encoder/decoder pass."""
    model = tiny_model().eval()
    inputs, mask = torch.randn(2, 3, 96, 96), random_masks(2)
    single = [model.reconstruct(inputs, samples(mask), statistics=name)
              for name in ('visible', 'unit')]
    passes = []
    forward = model.predict_pixels
    monkeypatch.setattr(model, 'predict_pixels',
                        lambda *args, **kwargs: passes.append(1) or forward(*args, **kwargs))
    both = model.reconstruct(inputs, samples(mask), statistics=('visible', 'unit'))
    assert len(passes) == 1 and len(both) == 2
    for got, want in zip(both, single):
        torch.testing.assert_close(got, want)


def test_perfect_prediction_with_visible_statistics(monkeypatch):
    """When every unit holds the same pixel values (shuffled), the visible units'
    mean and std are every unit's: a perfect decoder then gives back the input with
    ``statistics='visible'`` too."""
    model = tiny_model()
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(3, UNIT * UNIT, generator=generator) * 2 + 1  # one unit
    units = [values[:, torch.randperm(UNIT * UNIT, generator=generator)]
             for _ in range(2 * 9)]
    inputs = torch.stack(units).view(2, 3, 3, 3, UNIT, UNIT)  # B, Hu, Wu, C, p, p
    inputs = inputs.permute(0, 3, 1, 4, 2, 5).reshape(2, 3, 96, 96)  # B, C, H, W
    monkeypatch.setattr(model, 'predict_pixels',
                        lambda images, mask=None, plan=None:
                        model.head.construct_target(images))
    torch.testing.assert_close(
        model.reconstruct(inputs, samples(random_masks(2)), statistics='visible'),
        inputs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name, arch', [
    ('greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k', 'base'),
    ('greenmim_swin-large-w14_8xb256-amp-coslr-800e_in1k', 'large'),
    ('greenmim_swin-tiny-w7_8xb256-amp-coslr-800e_in1k', 'tiny')])
def test_paper_configs_are_consistent(name, arch):
    cfg = Config.fromfile(osp.join(CONFIGS, f'{name}.py'))
    backbone, neck, head = cfg.model.backbone, cfg.model.neck, cfg.model.head
    assert backbone.arch == arch and backbone.img_size == 224
    assert backbone.window_size == (14 if arch == 'large' else 7)
    channels = SwinTransformer.arch_zoo[arch]['embed_dims'] * 2**3
    assert neck.embed_dim == channels and neck.decoder_depth == 1
    assert neck.decoder_embed_dim == 512 and neck.decoder_num_heads == 16
    masker = cfg.train_dataloader.dataset.pipeline[-2]
    assert masker.type == 'GreenMIMMaskGenerator' and masker.mask_ratio == 0.75
    assert masker.mask_unit == backbone.mask_unit == neck.patch_size == head.patch_size
    batch = 8 * cfg.train_dataloader.batch_size
    assert batch == cfg.auto_scale_lr.base_batch_size == 2048
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.lr == pytest.approx(1.5e-4 * batch / 256)
    assert optimizer.betas == (0.9, 0.95) and optimizer.weight_decay == 0.05
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'bfloat16'  # no fp16 NaNs, no loss scaling
    assert cfg.optim_wrapper.loss_scale == dict(enabled=False)
    assert cfg.train_cfg.max_epochs == 800
    assert [s['end'] for s in resolved_schedule(cfg)] == [40, 800]


def test_no_weight_decay_on_norms_biases_and_position_tables():
    cfg = Config.fromfile(
        osp.join(CONFIGS, 'greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py'))
    model = tiny_model()
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(cfg.optim_wrapper.optimizer, type='AdamW'),
        paramwise_cfg=cfg.optim_wrapper.paramwise_cfg))
    decay = {id(p): group['weight_decay'] for group in wrapper.optimizer.param_groups
             for p in group['params']}
    for name, param in model.named_parameters():
        no_decay = (param.dim() == 1 or 'relative_position_bias_table' in name
                    or 'mask_token' in name)
        assert decay[id(param)] == (0.0 if no_decay else 0.05), name


def test_demo_config_trains_a_step_on_the_photographs():
    cfg = Config.fromfile(
        osp.join(CONFIGS, 'greenmim_swin-demo-w4_1xb16-400it_photos-128px.py'))
    init_default_scope(cfg.default_scope)
    dataset_cfg = dict(cfg.train_dataloader.dataset, names=['astronaut', 'coffee'])
    dataset = DATASETS.build(dataset_cfg)
    np.random.seed(0)
    torch.manual_seed(0)
    batch = default_collate([dataset[0], dataset[1]])
    model = MODELS.build(cfg.model)
    model.init_weights()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    losses = [float(model.train_step(batch, wrapper)['loss']) for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
