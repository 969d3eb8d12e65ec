"""Gradient accumulation: K micro-batches of b images make the update of one batch of
K x b (same images, same masks), ``--auto-scale-lr`` counts K, and a non-finite loss
drops the whole accumulation window."""
import math
from typing import List

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import DefaultScope, OPTIM_WRAPPERS
from mmpretrain.structures import DataSample

from greenmim_mm.datasets import greenmim_collate
from greenmim_mm.engine.accumulation import AccumulatingRunner, batch_of_one_update
from greenmim_mm.ops.masking import random_unit_masks
from helpers import tiny_greenmim

IMG = 128  # a 4x4 grid of 32 px units
SWIN = dict(type='GreenMIMSwinTransformer',
            arch=dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2]),
            img_size=IMG, window_size=4, out_indices=(3, ), drop_path_rate=0.)


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


def build_model(seed: int = 0):
    # float64: the equality below is of sums in another order
    return tiny_greenmim(SWIN, seed).double()


def samples(batch: int, seed: int = 0) -> List[dict]:
    """What ``PackInputs`` hands the collate: uint8 images and a unit mask each."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, IMG, IMG), dtype=torch.uint8,
                           generator=generator)
    masks = random_unit_masks(batch, (4, 4), 4, generator)
    return [dict(inputs=image, data_samples=DataSample().set_mask(mask))
            for image, mask in zip(images, masks)]


def sgd_wrapper(model, **kwargs):
    """The tools' wrapper (mmengine's OptimWrapper with the non-finite guard); SGD, so
    that the update is the gradient itself (AdamW's first step is its sign)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    return OPTIM_WRAPPERS.build(dict(type='SkipNonFiniteOptimWrapper',
                                     optimizer=optimizer, **kwargs))


def params(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize('micro_batches', [2, 3])
def test_micro_batches_make_the_update_of_one_big_batch(micro_batches):
    """K micro-batches of 2 with ``accumulative_counts=K`` == one batch of 2K: the loss
    is the mean over the masked units of the batch, every sample masks 12 of 16, and
    mmengine divides each micro-batch's loss by K. Equal to float64 rounding."""
    b = 2
    data = samples(micro_batches * b)
    whole, parts = build_model(), build_model()
    greenmim_collate_kw = dict(backbone=SWIN)
    whole.train_step(greenmim_collate(data, **greenmim_collate_kw), sgd_wrapper(whole))
    wrapper = sgd_wrapper(parts, accumulative_counts=micro_batches)
    start = params(parts)
    for k in range(micro_batches):
        micro = greenmim_collate(data[k * b:(k + 1) * b], **greenmim_collate_kw)
        parts.train_step(micro, wrapper)
        if k < micro_batches - 1:  # no update inside the window
            assert all(torch.equal(p, start[n]) for n, p in params(parts).items())
    expected, actual = params(whole), params(parts)
    moved = sum((expected[n] - start[n]).abs().sum() for n in start)
    assert moved > 1e-3  # the update is not empty
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-10, atol=1e-12,
                                   msg=name)


def test_micro_batches_without_accumulation_differ():
    """The check above can fail: two updates of b are not one of 2b."""
    data = samples(4)
    whole, parts = build_model(), build_model()
    whole.train_step(greenmim_collate(data, backbone=SWIN), sgd_wrapper(whole))
    wrapper = sgd_wrapper(parts)
    for k in range(2):
        parts.train_step(greenmim_collate(data[2 * k:2 * k + 2], backbone=SWIN), wrapper)
    assert any(not torch.allclose(params(parts)[n], p)
               for n, p in params(whole).items())


@pytest.mark.parametrize('bad', [0, 1, 2])
def test_a_nonfinite_loss_drops_its_whole_window(bad):
    """Windows of 3 micro-steps; micro-step ``bad`` of the second window is NaN: that
    window makes no update (the guard decides on the device at the window's end), the
    third window's update is as if the second had never been."""
    model = torch.nn.Linear(4, 1, bias=False)
    clean = torch.nn.Linear(4, 1, bias=False)
    clean.load_state_dict(model.state_dict())
    guard = sgd_wrapper(model, accumulative_counts=3)
    reference = sgd_wrapper(clean, accumulative_counts=3)
    torch.manual_seed(0)
    x = [torch.randn(3, 4) for _ in range(9)]
    hub = MessageHub.get_current_instance()
    for step in range(9):
        hub.update_info('iter', step)
        scale = math.nan if step == 3 + bad else 1.0
        before = model.weight.detach().clone()
        guard.update_params(model(x[step]).pow(2).mean() * scale)
        if 3 <= step < 6:
            assert torch.equal(model.weight, before), step  # the window makes no update
        if step != 3 + bad and not 3 <= step < 6:
            reference.update_params(clean(x[step]).pow(2).mean())
    guard.check_nonfinite()  # the count is read at the logging interval
    assert guard.skipped_steps == 1
    assert model.weight.grad is None or not model.weight.grad.abs().sum()
    torch.testing.assert_close(model.weight, clean.weight, rtol=0, atol=0)


def test_windows_each_with_one_bad_micro_step_stop_the_run():
    """Every window of 2 has a NaN micro-step: no update happens, so the run stops after
    ``max_nonfinite_steps`` dropped windows (good micro-steps do not reset the count)."""
    from greenmim_mm.errors import NonFiniteLossError
    model = torch.nn.Linear(4, 1, bias=False)
    guard = sgd_wrapper(model, accumulative_counts=2, max_nonfinite_steps=3)
    hub = MessageHub.get_current_instance()
    for step in range(6):
        hub.update_info('iter', step)
        scale = math.nan if step % 2 == 0 else 1.0
        guard.update_params(model(torch.ones(1, 4)).sum() * scale)
    with pytest.raises(NonFiniteLossError, match='3 steps in a row'):
        guard.check_nonfinite()


@pytest.mark.parametrize('gpus, batch, counts', [(8, 256, 1), (4, 512, 1), (2, 256, 4),
                                                 (1, 512, 4)])
def test_auto_scale_lr_counts_accumulation(tmp_path, monkeypatch, gpus, batch, counts):
    """The README's four setups of the paper's 2048 images per update: --auto-scale-lr
    keeps the paper's lr; without counting K, 2 x 256 x 4 scaled it by 1/4."""
    assert batch_of_one_update(gpus, batch, counts) == 2048
    model = torch.nn.Linear(2, 1)
    loader = torch.utils.data.DataLoader([torch.zeros(2)] * 4, batch_size=batch)
    runner = AccumulatingRunner(
        model=model, work_dir=str(tmp_path), train_dataloader=loader,
        train_cfg=dict(by_epoch=False, max_iters=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1.2e-3),
                           accumulative_counts=counts),
        auto_scale_lr=dict(base_batch_size=2048, enable=True),
        default_hooks=dict(checkpoint=None, logger=None), log_level='WARNING',
        experiment_name=f'scale_{tmp_path}')
    monkeypatch.setattr(AccumulatingRunner, 'world_size', property(lambda self: gpus))
    wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    runner.scale_lr(wrapper, runner.auto_scale_lr)
    assert wrapper.optimizer.param_groups[0]['lr'] == pytest.approx(1.2e-3)


def test_accumulate_flag_sets_the_optim_wrapper(tmp_path):
    from greenmim_cli.launch import prepare_train
    cfg: Config = prepare_train([
        'configs/pretrain/greenmim_swin-demo-w4_1xb16-400it_photos-128px.py',
        '--work-dir', str(tmp_path), '--accumulate', '4', '--auto-scale-lr',
        '--cfg-options', 'auto_scale_lr.base_batch_size=64'])
    assert cfg.optim_wrapper.accumulative_counts == 4
    assert cfg.auto_scale_lr.enable
