"""Downstream configs (ImageNet fine-tuning, COCO Mask R-CNN) build, and GreenMIM
checkpoints load into them strictly through ``init_cfg=dict(type='GreenMIMPretrained')``:
no silent random init, window changes resized, only documented keys new."""
import contextlib
import os.path as osp
from typing import Dict, Iterator, Tuple
from unittest import mock

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.model.weight_init import PretrainedInit
from mmengine.optim import build_optim_wrapper
from mmengine.registry import WEIGHT_INITIALIZERS, DefaultScope, build_from_cfg
from mmpretrain.models import SVT, SwinTransformer, SwinTransformerV2
from torch import nn

import greenmim_mm  # noqa: F401  (registration, checkpoint compat)
from greenmim_mm.models.backbones import SVTWithOutNorms
from greenmim_mm.engine.compat import resize_relative_position_bias_table
from greenmim_mm.engine.layer_decay import svt_layer_depth
from greenmim_mm.engine.pretrained_init import StrictPretrainedInit
from greenmim_mm.errors import CheckpointMismatchError
from greenmim_mm.engine.schedules import resolved_schedule
from config_files import REPO_ROOT, config_files, is_alias

CONFIGS = [p for p in config_files('classification') + config_files('detection')
           if not is_alias(p)]
TINY_SWIN = dict(embed_dims=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4])
TINY_SVT = dict(embed_dims=[16, 32, 32, 64], depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4],
                patch_sizes=[4, 2, 2, 2], strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                sr_ratios=[8, 4, 2, 1], window_sizes=[4, 4, 4, 4])


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Build models without drawing their random initial weights (the slow part of
    building a Swin-L on a CPU): for tests that look at shapes only."""
    with mock.patch.object(nn.Linear, 'reset_parameters', lambda self: None), \
            mock.patch.object(nn.modules.conv._ConvNd, 'reset_parameters',
                              lambda self: None):
        yield


def scope_models(scope: str):
    """The MODELS registry of ``scope`` (what ``default_scope`` selects)."""
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    return MODELS


def build(cfg_model: dict, scope: str) -> nn.Module:
    with DefaultScope.overwrite_default_scope(scope):
        return scope_models(scope).build(cfg_model)


def save_checkpoint(path, state_dict: Dict[str, torch.Tensor], prefix: str = 'backbone.',
                    shapes_only_file: bool = False) -> str:
    """A Runner-style checkpoint: ``state_dict`` under ``prefix`` plus a message hub
    (``HistoryBuffer``, NumPy scalars) that ``torch.load(weights_only=True)`` must read.
    ``shapes_only_file`` stores each tensor as an expanded scalar (a few bytes)."""
    tensors = {prefix + k: (v.new_zeros(()).expand(v.shape) if shapes_only_file else v)
               for k, v in state_dict.items()}
    torch.save(dict(meta=dict(iter=4), state_dict=tensors,
                    message_hub=message_hub_state()), str(path))
    return str(path)


def message_hub_state() -> dict:
    """What a Runner checkpoint holds besides weights: ``HistoryBuffer``s, NumPy."""
    hub = MessageHub('downstream_test')
    hub.update_scalar('train/loss', np.float64(1.0))
    hub.update_info('iter', 4)
    assert isinstance(hub.log_scalars['train/loss'], HistoryBuffer)
    return hub.state_dict()


def init_cfg(checkpoint: str, **kwargs) -> dict:
    return dict(type='GreenMIMPretrained', checkpoint=checkpoint, prefix='backbone.',
                **kwargs)


def assert_loaded(module: nn.Module, state_dict: Dict[str, torch.Tensor]) -> None:
    """Every tensor of ``state_dict`` is in ``module`` with the same value."""
    own = module.state_dict()
    for key, value in state_dict.items():
        assert torch.equal(own[key], value), key


# ---------------------------------------------------------------- the configs

@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_builds_and_runs(path):
    """Every downstream config parses, loads its backbone with the strict initializer,
    builds at full size and runs backbone + neck (+ head): 224 px for classification
    (the fine-tuning size; 256 px for the Swin V2 configs), 64 px for detection
    (small maps padded to one window)."""
    cfg = Config.fromfile(path)
    assert 'greenmim_mm' in cfg.custom_imports.imports
    assert cfg.model.backbone.init_cfg.type == 'GreenMIMPretrained'
    assert cfg.model.backbone.init_cfg.prefix == 'backbone.'
    with shapes_only():
        model = build(cfg.model, cfg.default_scope).eval()
    size = 64 if cfg.default_scope == 'mmdet' else test_crop_size(cfg)
    image = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        feats = model.extract_feat(image)
        if cfg.default_scope == 'mmdet':
            assert [f.shape[1] for f in feats] == [cfg.model.neck.out_channels] * 5
            channels = [f.shape[1] for f in model.backbone(image)]
            assert cfg.model.neck.in_channels == channels
        else:
            assert feats[-1].shape == (1, cfg.model.head.in_channels)
            assert model.head(feats).shape == (1, 1000)


def test_crop_size(cfg: Config) -> int:
    """The side of the images a classification config evaluates (its CenterCrop)."""
    return next(step['crop_size'] for step in cfg.test_dataloader.dataset.pipeline
                if step['type'] == 'CenterCrop')


test_crop_size.__test__ = False  # a helper, not a test


def expected_layer_depths(model: nn.Module) -> Tuple[Dict[str, int], int]:
    """Layer depth of every parameter of a classifier, by walking its backbone in
    forward order (written independently of the depth functions under test):
    the stem is 0, the k-th block of the whole backbone is k, a stage's
    down-sampling into the next stage (and, for Twins, the stage's output norm) goes
    with the stage's last block, a Twins position encoding with its stage's first
    block, and everything else (head, last norm) is the top, ``blocks + 1``.
    Returns ``({name: depth}, number of layers = blocks + 2)``."""
    backbone = model.backbone
    blocks = 0
    named: Dict[str, Tuple[nn.Module, int]] = {}  # module prefix -> (module, depth)
    if isinstance(backbone, SwinTransformer):
        named['patch_embed'] = (backbone.patch_embed, 0)
        for i, stage in enumerate(backbone.stages):
            for j, block in enumerate(stage.blocks):
                blocks += 1
                named[f'stages.{i}.blocks.{j}'] = (block, blocks)
            if stage.downsample is not None:
                named[f'stages.{i}.downsample'] = (stage.downsample, blocks)
    elif isinstance(backbone, SwinTransformerV2):  # patch merging opens a stage
        named['patch_embed'] = (backbone.patch_embed, 0)
        for i, stage in enumerate(backbone.stages):
            if stage.downsample is not None:
                named[f'stages.{i}.downsample'] = (stage.downsample, blocks)
            for j, block in enumerate(stage.blocks):
                blocks += 1
                named[f'stages.{i}.blocks.{j}'] = (block, blocks)
    else:
        assert isinstance(backbone, SVT), type(backbone)
        named['patch_embeds.0'] = (backbone.patch_embeds[0], 0)
        for i, stage in enumerate(backbone.stages):
            first = blocks + 1
            for j, layer in enumerate(stage):
                blocks += 1
                named[f'stages.{i}.{j}'] = (layer, blocks)
            named[f'position_encodings.{i}'] = (backbone.position_encodings[i], first)
            if i + 1 < len(backbone.stages):
                named[f'patch_embeds.{i + 1}'] = (backbone.patch_embeds[i + 1], blocks)
                named[f'norm_after_stage{i}'] = (getattr(backbone, f'norm_after_stage{i}'),
                                                 blocks)
    top = blocks + 1
    depths = {name: top for name, _ in model.named_parameters()}
    for prefix, (module, depth) in named.items():
        for name, _ in module.named_parameters():
            depths[f'backbone.{prefix}.{name}'] = depth
    return depths, blocks + 2


@pytest.mark.parametrize('path', [p for p in CONFIGS if '/classification/' in p],
                         ids=osp.basename)
def test_classification_recipe(path):
    """100 epochs, AdamW, layer-wise lr decay from the head down to the stem."""
    cfg = Config.fromfile(path)
    assert cfg.train_cfg.max_epochs == 100
    schedule = resolved_schedule(cfg)  # FractionOfRun -> the schedulers it builds
    assert [s['type'] for s in schedule] == ['LinearLR', 'CosineAnnealingLR']
    assert schedule[1]['end'] == 100 and schedule[0]['end'] == 20
    optim = cfg.optim_wrapper
    assert optim.optimizer.type == 'AdamW' and optim.optimizer.weight_decay == 0.05
    augments = [a.type for a in cfg.model.train_cfg.augments]
    assert augments == ['Mixup', 'CutMix']
    assert 'RandAugment' in [t.type for t in cfg.train_dataloader.dataset.pipeline]

    with shapes_only():
        model = build(cfg.model, 'mmpretrain')
    optim.type = 'OptimWrapper'  # AmpOptimWrapper needs a GPU
    optim.pop('loss_scale', None)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        wrapper = build_optim_wrapper(model, optim)
    groups = {g['param_name']: g for g in wrapper.optimizer.param_groups}
    rate = optim.paramwise_cfg.layer_decay_rate
    depths, num_layers = expected_layer_depths(model)
    assert set(groups) == set(depths)
    for name, depth in depths.items():  # every parameter, stem to head
        assert groups[name]['lr_scale'] == pytest.approx(rate**(num_layers - 1 - depth)), \
            name
    assert groups['head.fc.weight']['lr_scale'] == 1.0
    assert groups['head.fc.bias']['weight_decay'] == 0.0
    assert groups['head.fc.weight']['weight_decay'] == 0.05


@pytest.mark.parametrize('path', [p for p in CONFIGS if p.endswith('_coco.py')],
                         ids=osp.basename)
def test_detection_schedule(path):
    """3x = 36 epochs of multi-scale crops, 1x = 12 epochs; AdamW lr 1e-4, wd 0.05."""
    cfg = Config.fromfile(path)
    epochs, milestones = (36, [27, 33]) if '3x' in path else (12, [8, 11])
    assert cfg.train_cfg.max_epochs == epochs
    schedule = resolved_schedule(cfg)  # FractionOfRun -> the schedulers it builds
    assert schedule[1]['milestones'] == milestones
    assert schedule[1]['end'] == epochs
    assert (cfg.optim_wrapper.optimizer.type, cfg.optim_wrapper.optimizer.lr,
            cfg.optim_wrapper.optimizer.weight_decay) == ('AdamW', 1e-4, 0.05)
    transforms = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert ('RandomChoice' in transforms) == ('3x' in path)
    assert [m.type for m in [cfg.val_evaluator]] == ['CocoMetric']
    assert list(cfg.val_evaluator.metric) == ['bbox', 'segm']


# ---------------------------------------------------------------- strict loading

@pytest.mark.parametrize('scope', [None, 'mmpretrain', 'mmdet'])
def test_initializer_resolves_in_every_scope(scope):
    cfg = dict(type='GreenMIMPretrained', checkpoint='x.pth', prefix='backbone.')
    with DefaultScope.overwrite_default_scope(scope):
        initializer = build_from_cfg(cfg, WEIGHT_INITIALIZERS)
    assert isinstance(initializer, StrictPretrainedInit)
    assert isinstance(initializer, PretrainedInit)


def test_swin_b_checkpoint_in_swin_t_config_fails_naming_the_mismatch(tmp_path):
    with shapes_only():
        swin_b = SwinTransformer(arch='base')
        swin_t = SwinTransformer(arch='tiny', init_cfg=init_cfg(save_checkpoint(
            tmp_path / 'swin_b.pth', swin_b.state_dict(), shapes_only_file=True)))
    with pytest.raises(CheckpointMismatchError) as error:
        swin_t.init_weights()
    message = str(error.value)
    assert 'swin_b.pth' in message and "prefix 'backbone.'" in message
    assert '168 unexpected keys: stages.2.blocks.6-17.* (168 keys)' in message
    assert ('patch_embed.projection.weight (128, 3, 4, 4) in checkpoint vs '
            '(96, 3, 4, 4) in model') in message
    assert "Is it a 'base' checkpoint in a 'tiny' config?" in message


def test_stock_pretrained_init_would_only_warn(tmp_path):
    """The problem the strict initializer solves: mmengine's ``Pretrained`` accepts a
    checkpoint of another architecture and leaves the model randomly initialised."""
    source = SwinTransformer(arch=dict(TINY_SWIN, embed_dims=32))
    path = save_checkpoint(tmp_path / 'wider.pth', source.state_dict())
    target = SwinTransformer(arch=TINY_SWIN, init_cfg=dict(
        type='Pretrained', checkpoint=path, prefix='backbone.'))
    target.init_weights()  # no error
    with pytest.raises(CheckpointMismatchError, match='shape mismatches'):
        SwinTransformer(arch=TINY_SWIN, init_cfg=init_cfg(path)).init_weights()


def test_wrong_prefix_names_the_checkpoint_keys(tmp_path):
    path = save_checkpoint(tmp_path / 'ckpt.pth', SwinTransformer(arch=TINY_SWIN)
                           .state_dict(), prefix='encoder.')
    model = SwinTransformer(arch=TINY_SWIN, init_cfg=init_cfg(path))
    with pytest.raises(CheckpointMismatchError,
                       match=r"no key starting with 'backbone\.'.*encoder\."):
        model.init_weights()


def test_missing_checkpoint_says_how_to_set_it(tmp_path):
    model = SwinTransformer(arch=TINY_SWIN, init_cfg=init_cfg(str(tmp_path / 'no.pth')))
    with pytest.raises(FileNotFoundError,
                       match=r'no\.pth.*model\.backbone\.init_cfg\.checkpoint='):
        model.init_weights()


def test_classifier_keeps_the_loaded_weights(tmp_path):
    """Loaded under mmpretrain's scope into an ``ImageClassifier`` whose own init_cfg
    (TruncNormal, Constant) and the children's ``init_weights`` run around it: every
    backbone tensor, bias tables included, ends up equal to the checkpoint's."""
    source = SwinTransformer(arch=TINY_SWIN, img_size=64, window_size=2)
    for param in source.parameters():  # not what any initializer would draw
        nn.init.uniform_(param, 3.0, 4.0)
    path = save_checkpoint(tmp_path / 'pretrain.pth', source.state_dict())
    model = build(dict(
        type='ImageClassifier',
        backbone=dict(type='SwinTransformer', arch=TINY_SWIN, img_size=64, window_size=2,
                      init_cfg=init_cfg(path)),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=128),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
                  dict(type='Constant', layer='LayerNorm', val=1., bias=0.)]),
        'mmpretrain')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model.init_weights()
    assert_loaded(model.backbone, source.state_dict())


def test_bias_table_resize_is_a_spline_through_the_table():
    """The resize used on a window change (mmpretrain's, on a SciPy without interp2d)
    interpolates: the source offsets -1, 0, 1 are knots, so the 3 x 3 centre of the
    resized table is the source's, in the same orientation; a constant stays."""
    src, dst = 7, 13  # windows 4 -> 7
    table = torch.randn(src * src, 2)
    table[:, 1] = 0.5
    resized = resize_relative_position_bias_table(src, dst, table, 2)
    assert resized.shape == (dst * dst, 2)
    assert torch.allclose(resized[:, 1], torch.tensor(0.5))
    def centre(t: torch.Tensor, n: int) -> torch.Tensor:  # offsets -1..1 x -1..1
        return t.view(n, n, 2)[n // 2 - 1:n // 2 + 2, n // 2 - 1:n // 2 + 2]

    assert torch.allclose(centre(resized, dst), centre(table, src), atol=1e-5)


def test_window_change_resizes_the_bias_tables(tmp_path):
    """A window-4 checkpoint in a window-7 config: tables interpolated by the stock
    Swin load hook, index buffers those of the configured window."""
    source = SwinTransformer(arch=TINY_SWIN, img_size=128, window_size=4)
    path = save_checkpoint(tmp_path / 'w4.pth', source.state_dict())
    model = SwinTransformer(arch=TINY_SWIN, img_size=128, window_size=7,
                            init_cfg=init_cfg(path))
    fresh_index = {k: v.clone() for k, v in model.state_dict().items()
                   if k.endswith('relative_position_index')}
    model.init_weights()

    state = model.state_dict()
    for key, table in source.state_dict().items():
        if key.endswith('relative_position_bias_table'):
            assert table.shape[0] == 7 * 7 and state[key].shape[0] == 13 * 13
            expected = resize_relative_position_bias_table(7, 13, table, table.shape[1])
            assert torch.allclose(state[key], expected), key
        elif not key.endswith('relative_position_index'):
            assert torch.equal(state[key], table), key
    for key, index in fresh_index.items():
        assert torch.equal(state[key], index), key


TINY_SWIN_V2 = dict(TINY_SWIN, extra_norm_every_n_blocks=0)


def test_swin_v2_pretraining_loads_into_the_stock_finetune_backbone(tmp_path):
    """A GreenMIM Swin V2 pretraining checkpoint (window 4 at 128 px, as 12 at 192)
    into the fine-tuning config's stock SwinTransformerV2 (window 8 at 256 px, as 16,
    pretrained_window_sizes=[4, 4, 4, 2]), strictly: every parameter loads as is (the
    position bias is an MLP of the coordinates, whatever the window), and the stock
    class rebuilds its coordinate tables from the new windows scaled to the old."""
    from greenmim_mm.models.backbones import GreenMIMSwinTransformerV2
    source = GreenMIMSwinTransformerV2(arch=TINY_SWIN_V2, img_size=128,
                                       window_size=[4, 4, 4, 2])
    path = save_checkpoint(tmp_path / 'pretrain.pth', source.state_dict())
    cfg = Config.fromfile(osp.join(
        REPO_ROOT, 'configs', 'classification',
        'greenmim_swin-v2-base-w16_8xb128-coslr-100e_in1k-256px.py'))
    backbone = dict(cfg.model.backbone, arch=TINY_SWIN_V2, window_size=[8, 8, 8, 4],
                    pretrained_window_sizes=[4, 4, 4, 2],
                    init_cfg=dict(cfg.model.backbone.init_cfg, checkpoint=path))
    model = build(backbone, 'mmpretrain')
    assert type(model) is SwinTransformerV2
    model.init_weights()
    rebuilt = ('relative_position_index', 'relative_coords_table')
    assert_loaded(model, {k: v for k, v in source.state_dict().items()
                          if not k.endswith(rebuilt)})
    w_msa = model.stages[0].blocks[0].attn.w_msa
    assert w_msa.relative_coords_table.shape == (1, 15, 15, 2)
    # coordinates scaled to the pretraining window: offset 3 of window 4 -> 8
    scaled = torch.tensor(3 / 3 * 8)
    expected = torch.sign(scaled) * torch.log2(scaled.abs() + 1) / np.log2(8)
    torch.testing.assert_close(w_msa.relative_coords_table[0, 7 + 3, 7, 0], expected)


@pytest.mark.parametrize('source_v2', [True, False], ids=['v2-in-v1', 'v1-in-v2'])
def test_swin_v1_and_v2_checkpoints_do_not_mix(source_v2, tmp_path):
    """A Swin V2 checkpoint in a Swin config (and the reverse) stops with a line naming
    the backbone type to use."""
    v1 = dict(type='SwinTransformer', arch=TINY_SWIN, window_size=4)
    v2 = dict(type='SwinTransformerV2', arch=TINY_SWIN_V2, window_size=4)
    source, target = (v2, v1) if source_v2 else (v1, v2)
    path = save_checkpoint(tmp_path / 'source.pth',
                           build(source, 'mmpretrain').state_dict())
    model = build(dict(target, init_cfg=init_cfg(path)), 'mmpretrain')
    with pytest.raises(CheckpointMismatchError) as error:
        model.init_weights()
    fix = "type='SwinTransformerV2'" if source_v2 else "type='SwinTransformer'"
    line = [line for line in str(error.value).splitlines() if 'checkpoint in a' in line]
    assert len(line) == 1 and fix in line[0], str(error.value)
    assert ('This is a Swin V2 checkpoint in a Swin (V1) config' if source_v2 else
            'This is a Swin (V1) checkpoint in a Swin V2 config') in line[0]


def test_pretrain_checkpoint_loads_into_the_detector(tmp_path):
    """The demo pretraining model's checkpoint (GreenMIM: backbone, neck, head) into
    the demo Mask R-CNN: every backbone tensor loads; the only backbone keys it does
    not provide are the new output norms of stages 0-2. Read with
    ``torch.load(weights_only=True)`` (a message hub inside), as mmengine reads it."""
    pretrain_cfg = Config.fromfile(osp.join(
        REPO_ROOT, 'configs', 'pretrain', 'greenmim_swin-demo-w4_1xb16-400it_photos-128px.py'))
    pretrain = build(pretrain_cfg.model, 'mmpretrain')
    source = pretrain.state_dict()
    path = str(tmp_path / 'iter_4.pth')
    torch.save(dict(meta=dict(iter=4), state_dict=source,
                    message_hub=message_hub_state()), path)
    torch.load(path, weights_only=True)  # what mmengine's loader does under torch>=2.6

    det_cfg = Config.fromfile(osp.join(
        REPO_ROOT, 'configs', 'detection',
        'greenmim_mask-rcnn_swin-demo-w4_fpn_1xb4-1500it_shapes-128px.py'))
    det_cfg.model.backbone.init_cfg.checkpoint = path
    detector = build(det_cfg.model, 'mmdet')
    with DefaultScope.overwrite_default_scope('mmdet'):
        detector.init_weights()

    backbone_ckpt = {k[len('backbone.'):]: v for k, v in source.items()
                     if k.startswith('backbone.')}
    assert_loaded(detector.backbone, backbone_ckpt)
    new = set(detector.backbone.state_dict()) - set(backbone_ckpt)
    assert new == {f'norm{i}.{p}' for i in range(3) for p in ('weight', 'bias')}


def test_twins_pretrain_checkpoint_loads_into_the_detection_backbone(tmp_path):
    """A Twins-SVT pretraining backbone (output norm after the last stage only) into
    the detection backbone (``SVTWithOutNorms``: the same path, output-only norms for
    stages 0..2): only out_norm0..2 are new."""
    source = SVT(arch=TINY_SVT, qkv_bias=True, out_indices=(3, ),
                 norm_after_stage=[False, False, False, True])
    path = save_checkpoint(tmp_path / 'twins.pth', source.state_dict())
    model = SVTWithOutNorms(arch=TINY_SVT, qkv_bias=True, out_indices=(0, 1, 2, 3),
                            norm_after_stage=[False, False, False, True],
                            init_cfg=init_cfg(path))
    model.init_weights()
    assert_loaded(model, source.state_dict())
    new = set(model.state_dict()) - set(source.state_dict())
    assert new == {f'out_norm{i}.{p}' for i in range(3) for p in ('weight', 'bias')}

    deeper = SVT(arch=dict(TINY_SVT, depths=[1, 1, 1, 1], embed_dims=[16, 32, 64, 64]),
                 qkv_bias=True, init_cfg=init_cfg(path))
    with pytest.raises(CheckpointMismatchError) as error:
        deeper.init_weights()
    message = str(error.value)
    assert 'unexpected keys: stages.2.1.*' in message
    assert ('checkpoint: embed_dims=[16, 32, 32, 64], depths=[1, 1, 2, 1]; '
            'configured: embed_dims=[16, 32, 64, 64], depths=[1, 1, 1, 1]') in message


def test_allowed_missing_is_configurable(tmp_path):
    source = SwinTransformer(arch=TINY_SWIN, out_indices=(3, ))
    path = save_checkpoint(tmp_path / 'ckpt.pth', source.state_dict())
    model = SwinTransformer(arch=TINY_SWIN, out_indices=(0, 3),
                            init_cfg=init_cfg(path, allowed_missing=[]))
    with pytest.raises(CheckpointMismatchError, match=r'2 missing keys: norm0\.weight'):
        model.init_weights()


# ---------------------------------------------------------------- Twins layer decay

def test_svt_layer_depth():
    depths = [2, 2, 18, 2]  # 24 blocks + stem + head = 26 layers
    assert svt_layer_depth(depths, 'backbone.patch_embeds.0.projection.weight') == (0, 26)
    assert svt_layer_depth(depths, 'backbone.stages.0.0.attn.qkv.weight') == (1, 26)
    assert svt_layer_depth(depths, 'backbone.position_encodings.2.proj.0.weight') == (
        5, 26)
    assert svt_layer_depth(depths, 'backbone.stages.2.17.ffn.layers.1.weight') == (22, 26)
    assert svt_layer_depth(depths, 'backbone.patch_embeds.3.norm.weight') == (22, 26)
    assert svt_layer_depth(depths, 'backbone.norm_after_stage1.weight') == (4, 26)
    assert svt_layer_depth(depths, 'backbone.norm_after_stage3.weight') == (25, 26)
    assert svt_layer_depth(depths, 'head.fc.weight') == (25, 26)
