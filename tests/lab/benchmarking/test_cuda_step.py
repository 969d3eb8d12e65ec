"""A whole GreenMIM training step on CUDA equals the CPU one (run by tools/gpu_check.sh)."""
import copy

import pytest
import torch
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import greenmim_mm  # noqa: F401  (registers the models)
from greenmim_lab.benchmarking.comparisons import GREENMIM_CONFIGS, load_config
from greenmim_mm.ops.masking import random_unit_masks


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('attn_backend', ['sdpa', 'flex'])
@pytest.mark.parametrize('backbone', ['swin', 'twins'])
def test_greenmim_step_on_cuda_matches_cpu(backbone, attn_backend):
    """Loss and every gradient of the demo-size model, CUDA (either attention backend,
    masks on the CPU as the data preprocessor leaves them) against the CPU (sdpa)."""
    cfg = load_config(GREENMIM_CONFIGS[backbone]['demo'])
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        cpu_model = MODELS.build(cfg.model)
    cpu_model.init_weights()
    cuda_model = copy.deepcopy(cpu_model).cuda()
    cuda_model.backbone.attn_backend = attn_backend
    img = torch.randn(2, 3, 128, 128)
    masks = random_unit_masks(2, (4, 4), 4, torch.Generator().manual_seed(0))
    losses = []
    for model, inputs in ((cpu_model, img), (cuda_model, img.cuda())):
        loss = model.loss(inputs, [DataSample().set_mask(m) for m in masks])['loss']
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1].cpu(), losses[0], rtol=1e-4, atol=1e-5)
    for (name, p_cpu), p_cuda in zip(cpu_model.named_parameters(),
                                     cuda_model.parameters()):
        torch.testing.assert_close(p_cuda.grad.cpu(), p_cpu.grad, rtol=1e-3, atol=1e-5,
                                   msg=lambda m: f'{name}: {m}')


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('attn_backend', ['sdpa', 'flex'])
def test_compiled_bf16_step_on_cuda_compiles_once(attn_backend):
    """The GPU-shaped step: loader plans (greenmim_collate), pinned and copied without
    blocking, bf16 autocast, torch.compile (inductor) of train_step: 4 steps with fresh
    masks, no recompilation, finite losses close to eager's."""
    import torch._dynamo as dynamo
    from mmengine.optim import build_optim_wrapper

    from greenmim_mm.datasets import greenmim_collate

    cfg = load_config(GREENMIM_CONFIGS['swin']['demo'])
    cfg.model.backbone.attn_backend = attn_backend
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        models = [MODELS.build(cfg.model) for _ in range(2)]
    models[0].init_weights()
    models[1].load_state_dict(models[0].state_dict())
    batches = []
    for seed in range(4):
        generator = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (8, 3, 128, 128), dtype=torch.uint8,
                               generator=generator)
        masks = random_unit_masks(8, (4, 4), 4, generator)
        batch = greenmim_collate(
            [dict(inputs=i, data_samples=DataSample().set_mask(m))
             for i, m in zip(images, masks)], backbone=cfg.model.backbone)
        batch['plan'] = batch['plan'].pin_memory()
        batches.append(batch)
    losses = []
    for index, model in enumerate(models):
        model.cuda().train()
        wrapper = build_optim_wrapper(model, dict(
            type='AmpOptimWrapper', dtype='bfloat16', loss_scale=dict(enabled=False),
            optimizer=dict(type='AdamW', lr=1e-4)))
        step = model.train_step if index == 0 else torch.compile(model.train_step)
        with dynamo.config.patch(error_on_recompile=index == 1):
            losses.append([float(step(batch, wrapper)['loss']) for batch in batches])
    dynamo.reset()
    assert all(torch.isfinite(torch.tensor(run)).all() for run in losses)
    torch.testing.assert_close(losses[1], losses[0], rtol=2e-2, atol=0)
