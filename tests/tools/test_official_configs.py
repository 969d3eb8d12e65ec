"""The configs reproduce the published GreenMIM models, and converted checkpoints load
strictly into them and into the fine-tuning configs.

- The Swin-B, Swin-L w14 and Twins-L pretraining configs, built at full size on the meta
  device, take a converted checkpoint of the published architecture (the published
  model factory's, shapes only) with ``strict=True``; their LayerNorms have the
  published eps 1e-6, and their windows, shifts, heads and sub-sampling are the
  published ones.
- Every fine-tuning config (ImageNet, Mask R-CNN) of those three backbones loads a
  converted checkpoint through ``GreenMIMPretrained`` (strict), with tiny archs.
"""
import dataclasses
import os.path as osp

import pytest
import torch
from config_files import config_files, is_alias
from converted_models import build_pretrain_model, mmpretrain_arch, pretrain_config
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.models.backbones.twins import LSAEncoderLayer
from mmpretrain.registry import MODELS
from official_models import (SWIN_B, SWIN_L_W14, TWINS_L, PublishedSwin,
                             published_swin_state_dict, published_twins_state_dict)
from test_downstream_configs import shapes_only
from torch import nn

from greenmim_mm.models.official import (convert_official_checkpoint,
                                         convert_official_state_dict)

PUBLISHED = {'swin-base-w7': SWIN_B, 'swin-large-w14': SWIN_L_W14, 'twins-large': TWINS_L}
TINY = {
    'swin-base-w7': dataclasses.replace(SWIN_B, embed_dim=16, num_heads=(1, 2, 2, 4),
                                        depths=(2, 2, 2, 2)),
    'swin-large-w14': dataclasses.replace(SWIN_L_W14, embed_dim=16, num_heads=(1, 2, 2, 4),
                                          depths=(2, 2, 2, 2)),
    'twins-large': dataclasses.replace(TWINS_L, embed_dims=(16, 32, 32, 64),
                                       num_heads=(1, 2, 2, 4), mlp_ratios=(2, 2, 2, 2),
                                       depths=(2, 2, 2, 2)),
}


def published_state_dict(published, **kwargs):
    if isinstance(published, PublishedSwin):
        return published_swin_state_dict(published, **kwargs)
    return published_twins_state_dict(published, **kwargs)


def published_name(path: str):
    """The published model a downstream config fine-tunes (None: another one)."""
    names = [name for name in PUBLISHED if name in osp.basename(path)]
    return names[0] if names else None


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_pretraining_config_is_the_published_model(name):
    published = PUBLISHED[name]
    model = build_pretrain_model(name, None, device='meta')
    converted = convert_official_state_dict(published_state_dict(published, device='meta'))
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(converted, strict=True)

    norms = {n: m.eps for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    assert norms and set(norms.values()) == {1e-6}, norms
    assert model.neck.decoder_blocks[0].attn.num_heads == published.decoder_num_heads
    backbone = model.backbone
    if isinstance(published, PublishedSwin):  # windows and shifts at 224 px, heads
        geometry = backbone.visible_geometry((224, 224))
        for i, depth in enumerate(published.depths):
            _, window, shift = published.stage_geometry(i)
            assert geometry.stages[i].windows == tuple(
                (window, shift if j % 2 else 0) for j in range(depth)), i
            heads = {b.attn.w_msa.num_heads for b in backbone.stages[i].blocks}
            assert heads == {published.num_heads[i]}
    else:  # windows, heads, sub-sampling
        for k, stage in enumerate(backbone.stages):
            for layer in stage:
                assert layer.attn.num_heads == published.num_heads[k]
                if isinstance(layer, LSAEncoderLayer):
                    assert layer.attn.window_size == published.window_size
                else:
                    assert layer.attn.sr_ratio == published.sr_ratios[k]


def test_released_swin_b_w14_fits_the_swin_l_w14_config_with_arch_base():
    """The README's recipe for the third released checkpoint (no config of its own)."""
    cfg = pretrain_config('swin-large-w14', None)
    cfg.merge_from_dict({'model.backbone.arch': 'base', 'model.neck.embed_dim': 1024})
    with DefaultScope.overwrite_default_scope('mmpretrain'), shapes_only():
        model = MODELS.build(cfg.model).to('meta')
    published = dataclasses.replace(SWIN_B, window_size=14)
    model.load_state_dict(convert_official_state_dict(
        published_swin_state_dict(published, device='meta')), strict=True)


DOWNSTREAM = [p for p in config_files('classification') + config_files('detection')
              if not is_alias(p) and published_name(p)]


def test_every_published_backbone_has_downstream_configs():
    assert {published_name(p) for p in DOWNSTREAM} == set(PUBLISHED)
    assert len(DOWNSTREAM) == 7  # 3 classification, 4 detection


@pytest.mark.parametrize('path', DOWNSTREAM, ids=osp.basename)
def test_converted_checkpoint_fine_tunes(path, tmp_path):
    """A converted checkpoint (tiny arch) loads into the config's backbone (same tiny
    arch, everything else as configured) through its strict ``GreenMIMPretrained``."""
    published = TINY[published_name(path)]
    src = tmp_path / 'checkpoint-799.pth'
    torch.save(dict(model=published_state_dict(published, seed=1)), src)
    dst = str(tmp_path / 'converted.pth')
    conversion = convert_official_checkpoint(str(src), dst)

    cfg = Config.fromfile(path)
    backbone_cfg = cfg.model.backbone
    assert backbone_cfg.init_cfg.type == 'GreenMIMPretrained'
    backbone_cfg.arch = mmpretrain_arch(published)
    backbone_cfg.init_cfg.checkpoint = dst
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS as registry
    else:
        registry = MODELS
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        backbone = registry.build(backbone_cfg)
        backbone.init_weights()  # raises CheckpointMismatchError unless it fits

    loaded = backbone.state_dict()
    resized = []
    for key, value in conversion.state_dict.items():
        if not key.startswith('backbone.') or key.endswith('relative_position_index'):
            continue
        own = loaded[key[len('backbone.'):]]
        if own.shape == value.shape:
            assert torch.equal(own, value), key
        else:  # a window the fine-tuning config enlarges: the table was interpolated
            assert key.endswith('relative_position_bias_table'), key
            resized.append(key)
    expected_resized = ('large-w14' in path and backbone_cfg.get('pad_small_map', False))
    assert bool(resized) == bool(expected_resized), resized
