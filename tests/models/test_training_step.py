"""The GPU-shaped training step, proven on the CPU.

- plans are made by ``greenmim_collate`` (the DataLoader workers) and the training
  process builds none;
- every tensor shape of a step is the same whatever the masks (static shapes);
- no device value is read on the host (the step runs with the model on ``meta``);
- a compiled step (what mmengine's ``compile=True`` does) compiles once and follows the
  eager losses;
- bf16 autocast gives a finite loss close to fp32's.
"""
import warnings
from typing import Dict, List, Tuple, Union

import pytest
import torch
import torch._dynamo as dynamo
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import greenmim_mm.ops.sparse_conv as sparse_conv
import greenmim_mm.ops.sparse_conv_index as sparse_conv_index
import greenmim_mm.ops.visible_plan as visible_plan
import greenmim_mm.ops.window_plan as window_plan
from greenmim_mm.datasets import greenmim_collate
from greenmim_mm.ops.masking import random_unit_masks
from greenmim_mm.ops.visible_plan import PackedVisiblePlan, VisiblePlan
from helpers import tiny_greenmim

IMG = 128  # a 4x4 grid of 32 px units
SWIN = dict(type='GreenMIMSwinTransformer',
            arch=dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2]),
            img_size=IMG, window_size=4, out_indices=(3, ), drop_path_rate=0.)
TWINS = dict(type='GreenMIMSVT',
             arch=dict(embed_dims=[16, 32, 64, 128], depths=[2, 2, 2, 2],
                       num_heads=[1, 1, 2, 2], patch_sizes=[4, 2, 2, 2],
                       strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                       sr_ratios=[8, 4, 2, 1], window_sizes=[4, 4, 4, 4]),
             out_indices=(3, ))
BACKBONES = dict(swin=SWIN, twins=TWINS)
OPTIM = dict(optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05))


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


def build_model(backbone: dict, seed: int = 0, mask_mode: str = 'sample'):
    return tiny_greenmim(backbone, seed, mask_mode)


def pipeline_samples(batch: int, seed: int, num_visible: int = 4) -> List[dict]:
    """What ``PackInputs`` hands the collate: uint8 images and a unit mask each."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, IMG, IMG), dtype=torch.uint8,
                           generator=generator)
    masks = random_unit_masks(batch, (4, 4), num_visible, generator)
    return [dict(inputs=image, data_samples=DataSample().set_mask(mask))
            for image, mask in zip(images, masks)]


def collate(backbone: dict, batch: int = 4, seed: int = 0, **kwargs) -> dict:
    return greenmim_collate(pipeline_samples(batch, seed), backbone=backbone, **kwargs)


def plan_shapes(plan: Union[VisiblePlan, PackedVisiblePlan]) -> List[Tuple]:
    """Every tensor shape and integer of a plan, in a fixed order (of a packed plan:
    its tensors' shapes and dtypes, then those of the working plan it unpacks to)."""
    if isinstance(plan, PackedVisiblePlan):
        packed = plan.plan
        tensors = [packed.mask, packed.unit_ids]
        for stage in packed.stages:
            for _, attention in sorted(stage.attention.items()):
                tensors += [attention.token_slot, attention.slot_key]
            tensors += [t for t in (stage.embed_rows, stage.sr_rows, stage.peg_rows)
                        if t is not None]
        return [(tuple(t.shape), t.dtype) for t in tensors] + plan_shapes(plan.to('cpu'))
    found = [tuple(plan.mask.shape), tuple(plan.unit_ids.shape)]
    for stage in plan.stages:
        for key, attention in sorted(stage.attention.items()):
            found.append((key, attention.group_size, attention.num_groups))
            found += [tuple(getattr(attention, name).shape) for name in (
                'token_slot', 'slot_window', 'slot_pos', 'seq_order', 'block_low')]
        found += [None if t is None else tuple(t.shape) for t in (
            stage.token_index, stage.embed_rows, stage.sr_rows, stage.peg_rows)]
    return found


# --------------------------------------------------------------------------------
# Static shapes
# --------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['swin', 'twins'])
def test_plan_shapes_do_not_depend_on_the_masks(name):
    shapes = {str(plan_shapes(collate(BACKBONES[name], seed=seed)['plan']))
              for seed in range(25)}
    assert len(shapes) == 1


def test_swin_b_plan_shapes_do_not_depend_on_the_masks():
    """The paper's geometry (224 px, window 7, 12 of 49 units), 8 images a batch."""
    model = MODELS.build(dict(type='GreenMIMSwinTransformer', arch='base',
                              window_size=7)).to('meta')
    img = torch.empty(8, 3, 224, 224, device='meta')
    shapes = set()
    for seed in range(10):
        mask = random_unit_masks(8, (7, 7), 12, torch.Generator().manual_seed(seed))
        shapes.add(str(plan_shapes(model.visible_plan(img, mask))))
    assert len(shapes) == 1


def working_nbytes(plan: VisiblePlan) -> int:
    """Bytes of every tensor of a working plan."""
    tensors = [plan.mask, plan.unit_ids]
    for stage in plan.stages:
        for attention in stage.attention.values():
            tensors += [getattr(attention, name) for name in (
                'token_slot', 'slot_window', 'slot_pos', 'seq_order', 'seq_window',
                'seq_pos', 'block_low', 'block_high')]
        tensors += [stage.token_index, stage.embed_rows, stage.sr_rows, stage.peg_rows,
                    stage.coords]
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def test_swin_b_plan_travels_in_a_quarter_of_the_bytes():
    """The paper's Swin-B at 256 images: the packed plan (what the workers hand over)
    is at most 7 MB and a quarter of the working plan, in the smallest index dtypes."""
    model = MODELS.build(dict(type='GreenMIMSwinTransformer', arch='base',
                              window_size=7)).to('meta')
    geometry = model.checked_geometry(torch.empty(256, 3, 224, 224, device='meta'))
    mask = random_unit_masks(256, (7, 7), 12, torch.Generator().manual_seed(0))
    packed = visible_plan.pack_visible_plan(geometry, mask)
    assert packed.nbytes <= 7e6
    assert packed.nbytes <= working_nbytes(packed.to('cpu')) / 4
    for stage in packed.plan.stages:
        for attention in stage.attention.values():
            for index in (attention.token_slot, attention.slot_key):
                smallest = torch.int16 if int(index.max()) < 2**15 else torch.int32
                assert index.dtype == smallest


@pytest.mark.parametrize('window,batch,trials', [(4, 16, 200), (7, 32, 30)])
def test_random_masks_fit_the_allocated_groups(window, batch, trials):
    """The capacity (ceil(T / g) * 1.02 + 1 groups) holds for random masks: no batch
    falls back to the bound (which would compile the step once more)."""
    img_px = 32 * window  # 4x4 or 7x7 units; window 4 at 128 px is the demo's
    model = MODELS.build(dict(SWIN, window_size=window, img_size=img_px)).to('meta')
    img = torch.empty(batch, 3, img_px, img_px, device='meta')
    grid = (img_px // 32, ) * 2
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for seed in range(trials):
            mask = random_unit_masks(batch, grid, grid[0] * grid[1] // 4,
                                     torch.Generator().manual_seed(seed))
            model.visible_plan(img, mask)


def test_over_capacity_falls_back_to_the_bound_and_stays_exact():
    coords = visible_plan.visible_token_coords(
        random_unit_masks(3, (7, 7), 12, torch.Generator().manual_seed(1)), 8)
    free = window_plan.plan_window_groups(coords, (56, 56), 7, 3, group_size=49)
    with pytest.warns(UserWarning, match='more than the 1 allocated: using the '
                      'guaranteed bound'):
        tight = window_plan.plan_window_groups(coords, (56, 56), 7, 3, group_size=49,
                                               num_groups=1)
    assert tight.num_groups == -(-2 * 3 * 768 // 49) >= free.num_groups
    # Same slots for every token, extra groups are padding.
    assert torch.equal(tight.token_slot, free.token_slot)
    assert torch.equal(tight.slot_window[:free.num_groups], free.slot_window)
    assert (tight.slot_window[free.num_groups:] == -1).all()


# --------------------------------------------------------------------------------
# Plans come from the loader, and match the model's own planning
# --------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['swin', 'twins'])
@pytest.mark.parametrize('mask_mode', ['sample', 'batch'])
def test_loader_plan_gives_the_loss_of_bare_masks(name, mask_mode):
    model = build_model(BACKBONES[name], mask_mode=mask_mode)
    batch = collate(BACKBONES[name], mask_mode=mask_mode)
    data = model.data_preprocessor(batch, True)
    assert isinstance(data['plan'], VisiblePlan)
    with_plan = model(**data, mode='loss')['loss']
    data.pop('plan')
    from_masks = model(**data, mode='loss')['loss']
    torch.testing.assert_close(with_plan, from_masks, rtol=0, atol=0)


@pytest.mark.parametrize('name', ['swin', 'twins'])
def test_training_process_builds_no_plan(name, monkeypatch):
    model = build_model(BACKBONES[name])
    optim_wrapper = build_optim_wrapper(model, OPTIM)
    batches = [collate(BACKBONES[name], seed=seed) for seed in range(2)]

    def forbidden(*args, **kwargs):
        raise AssertionError('a plan was built in the training process')
    for module, names in ((visible_plan, ('build_visible_plan', 'pack_visible_plan',
                                          'pack_window_groups', 'block_rows',
                                          'neighbour_rows', 'visible_token_coords',
                                          'visible_unit_ids')),
                          (window_plan, ('plan_window_groups', 'pack_window_groups',
                                         '_pack')),
                          (sparse_conv_index, ('neighbour_index', 'block_index',
                                               'token_index_map')),
                          (sparse_conv, ('block_rows', 'neighbour_rows', 'token_index_map'))):
        for attr in names:
            monkeypatch.setattr(module, attr, forbidden)
    for batch in batches:
        log = model.train_step(batch, optim_wrapper)
        assert torch.isfinite(log['loss'])


@pytest.mark.parametrize('name', ['swin', 'twins'])
def test_whole_step_on_the_meta_device(name):
    """A training step with the model (and so the images and plan) on the meta device:
    meta tensors hold no values, so the step never reads a device value on the host
    (no device->host synchronisation)."""
    model = build_model(BACKBONES[name]).to('meta')
    optim_wrapper = build_optim_wrapper(model, OPTIM)
    log = model.train_step(collate(BACKBONES[name]), optim_wrapper)
    assert log['loss'].device.type == 'meta'
    assert all(p.grad is None or p.grad.device.type == 'meta'
               for p in model.parameters())


# --------------------------------------------------------------------------------
# Compiled step
# --------------------------------------------------------------------------------
def test_encoder_and_loss_compile_without_graph_breaks():
    model = build_model(SWIN)
    data = model.data_preprocessor(collate(SWIN), True)
    explanation = dynamo.explain(model.loss)(data['inputs'], data['data_samples'],
                                             plan=data['plan'])
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_step_compiles_once_and_follows_eager():
    """``torch.compile(model.train_step)``, as mmengine's ``compile=True``: 8 steps with
    fresh per-sample masks, no recompilation, the eager run's losses."""
    batches = [collate(SWIN, seed=seed) for seed in range(8)]
    losses: Dict[str, List[float]] = {}
    for mode in ('eager', 'compiled'):
        model = build_model(SWIN)
        optim_wrapper = build_optim_wrapper(model, OPTIM)
        step = model.train_step
        dynamo.reset()
        if mode == 'compiled':
            step = torch.compile(model.train_step, backend='eager')
        with dynamo.config.patch(error_on_recompile=True):
            losses[mode] = [float(step(batch, optim_wrapper)['loss'])
                            for batch in batches]
    dynamo.reset()
    torch.testing.assert_close(losses['compiled'], losses['eager'], rtol=1e-5, atol=0)


@pytest.mark.parametrize('tensor_lr', [True, False])
def test_compiled_step_with_the_optimizer_and_a_changing_lr_never_recompiles(tensor_lr):
    """The step as ``tools/train.py`` runs it compiled: the non-finite guard's optim
    wrapper, AdamW inside the compiled step, the lr changed by a scheduler every
    step, 10 steps with fresh masks: no recompilation with the lr kept as a tensor
    (what ``DeviceRuntimeInfoHook`` does before each iteration). With mmengine's Python
    float lr AdamW recompiles at the first change (the baseline, and proof that the
    check sees recompilations)."""
    from mmengine.optim import LinearLR

    from greenmim_mm.engine.tensor_lr import keep_lr_tensors
    batches = [collate(SWIN, seed=seed) for seed in range(10)]
    model = build_model(SWIN)
    optim_wrapper = build_optim_wrapper(model, dict(OPTIM,
                                                    type='SkipNonFiniteOptimWrapper'))
    scheduler = LinearLR(optim_wrapper, start_factor=0.1, by_epoch=False, end=10)
    dynamo.reset()
    step = torch.compile(model.train_step, backend='eager')
    tensors: dict = {}
    lrs = []
    try:
        with dynamo.config.patch(error_on_recompile=True):
            for batch in batches:
                if tensor_lr:
                    keep_lr_tensors(optim_wrapper, tensors)
                lrs.append(float(optim_wrapper.param_groups[0]['lr']))
                step(batch, optim_wrapper)
                scheduler.step()
    except dynamo.exc.RecompileError as error:
        assert not tensor_lr, error
        assert "['lr']" in str(error)
        return
    finally:
        dynamo.reset()
    assert tensor_lr and len(set(lrs)) == 10


def test_compiling_without_the_loader_plan_is_a_clear_error():
    model = build_model(SWIN)
    batch = collate(SWIN)
    del batch['plan']
    data = model.data_preprocessor(batch, True)
    dynamo.reset()
    compiled = torch.compile(model.loss, backend='eager', fullgraph=True)
    with pytest.raises(Exception, match="needs the plan built in the data loader: use "
                       r"collate_fn=dict\(type='greenmim_collate'"):
        compiled(data['inputs'], data['data_samples'])
    dynamo.reset()


# --------------------------------------------------------------------------------
# Mismatches, precision
# --------------------------------------------------------------------------------
def test_collate_for_another_backbone_is_a_clear_error():
    model = build_model(SWIN)
    batch = collate(dict(SWIN, window_size=2))
    with pytest.raises(ValueError, match=r'built for another backbone geometry .*stage '
                       r"0: .* give the collate function the model's backbone config"):
        model.train_step(batch, build_optim_wrapper(model, OPTIM))


def test_mask_mode_mismatch_is_a_clear_error():
    model = build_model(SWIN, mask_mode='batch')
    data = model.data_preprocessor(collate(SWIN), True)
    with pytest.raises(ValueError, match="mask_mode='batch' but the data loader planned "
                       'a mask per sample'):
        model(**data, mode='loss')


def test_unequal_visible_counts_are_a_clear_error():
    samples = pipeline_samples(2, seed=0)
    samples[1]['data_samples'].set_mask(random_unit_masks(1, (4, 4), 5)[0])
    with pytest.raises(ValueError, match='same number of visible units, got \\[4, 5\\]'):
        greenmim_collate(samples, backbone=SWIN)


def test_without_a_backbone_the_model_plans_and_says_so(monkeypatch):
    import greenmim_mm.models.selfsup.greenmim as greenmim
    batch = greenmim_collate(pipeline_samples(2, seed=0))
    assert 'plan' not in batch
    model = build_model(SWIN)
    said = []
    monkeypatch.setattr(greenmim, 'print_log', lambda msg, **kwargs: said.append(msg))
    model.train_step(batch, build_optim_wrapper(model, OPTIM))
    model.train_step(batch, build_optim_wrapper(model, OPTIM))
    assert len(said) == 1 and 'no plan from the data loader' in said[0]


@pytest.mark.parametrize('name', ['swin', 'twins'])
def test_bfloat16_step_is_finite_and_close_to_float32(name):
    """bf16 autocast (the GPU configs' precision) on the CPU: within 1 % of fp32."""
    model = build_model(BACKBONES[name])
    data = model.data_preprocessor(collate(BACKBONES[name], batch=8), True)
    expected = model(**data, mode='loss')['loss']
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = model(**data, mode='loss')['loss']
    assert torch.isfinite(loss)
    assert abs(float(loss) - float(expected)) < 0.01 * float(expected)
