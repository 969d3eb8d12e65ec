"""The converter of published GreenMIM Twins (ALTGVT) checkpoints.

As for Swin: random weights in the published names and layouts (spconv kernels
``(out, kh, kw, in)``, a PEG without ``+ x``) run through a reference of the published
computation (``official_twins_reference.py``) give the loss and predictions of this
project's ``GreenMIM`` built from the Twins-L pretraining config (tiny arch) after
conversion.
"""
import argparse
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from converted_models import build_pretrain_model, converted
from helpers import random_masks
from mmengine.runner import load_checkpoint
from mmpretrain.models.utils import ConditionalPositionEncoding
from official_mae_reference import noise_keeping_row_major
from official_models import TWINS_L, published_twins_state_dict
from official_twins_reference import published_twins, sparse_conv

from greenmim_mm.models.official import (OfficialCheckpointError, convert_official,
                                         convert_official_checkpoint,
                                         convert_official_state_dict)
from greenmim_mm.models.official.twins import fold_peg_identity, spconv_to_torch_weight

TINY_TWINS = dataclasses.replace(TWINS_L, embed_dims=(16, 32, 32, 64),
                                 num_heads=(1, 2, 2, 4), mlp_ratios=(2, 2, 2, 2),
                                 depths=(2, 2, 2, 2))


@pytest.fixture(scope='module')
def official():
    return published_twins_state_dict(TINY_TWINS, seed=0)


def test_converted_model_reproduces_the_published_loss(official):
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    mask = random_masks(1, (7, 7), 12, seed=2)[0]
    noise = noise_keeping_row_major(mask, torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected_loss, expected_pred = published_twins(official, TINY_TWINS, images, noise)
    model = build_pretrain_model('twins-large', TINY_TWINS)
    model.load_state_dict(convert_official_state_dict(official), strict=True)
    loss, pred = converted(model, images, mask)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(pred, expected_pred, rtol=1e-4, atol=1e-5)


def test_spconv_kernel_becomes_the_pytorch_kernel():
    """A strided sparse conv of ``(out, kh, kw, in)`` weights (as spconv computes it,
    on a fully visible map) is ``F.conv2d`` with the converted ``(out, in, kh, kw)``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 8, 5, generator=gen)  # B, H, W, C
    weight = torch.randn(7, 2, 2, 5, generator=gen)  # spconv: out, kh, kw, in
    bias = torch.randn(7, generator=gen)
    coords = torch.cartesian_prod(torch.arange(8), torch.arange(8))
    sparse, _ = sparse_conv(x.reshape(2, 64, 5), coords, 8,
                            {'w.weight': weight, 'w.bias': bias}, 'w', 2)  # B, 16, 7
    dense = F.conv2d(x.permute(0, 3, 1, 2), spconv_to_torch_weight('w', weight, 5), bias,
                     stride=2)  # B, 7, 4, 4
    torch.testing.assert_close(dense.flatten(2).transpose(1, 2), sparse)


def test_spconv_module_uses_that_layout():
    """Where spconv is installed: its ``SparseConv2d`` keeps ``(out, kh, kw, in)`` and
    computes the PyTorch conv of the converted weight (one CPU thread, where its CPU
    build is right)."""
    spconv = pytest.importorskip('spconv.pytorch')
    conv = spconv.SparseConv2d(5, 7, 2, stride=2)
    assert tuple(conv.weight.shape) == (7, 2, 2, 5)
    x = torch.randn(1, 5, 4, 4)
    indices = torch.cartesian_prod(torch.zeros(1), torch.arange(4), torch.arange(4)).int()
    out = conv(spconv.SparseConvTensor(x[0].flatten(1).t().contiguous(), indices, [4, 4], 1))
    dense = F.conv2d(x, spconv_to_torch_weight('w', conv.weight.detach(), 5),
                     conv.bias.detach(), stride=2)
    torch.testing.assert_close(out.dense(), dense, rtol=1e-5, atol=1e-5)


def test_peg_without_residual_becomes_the_stock_peg():
    """The published ``PosCNN`` is ``conv(x)``; mmpretrain's PEG with the folded
    kernel, ``conv'(x) + x``, gives the same on every token."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 1, 3, 3, generator=gen)
    bias = torch.randn(6, generator=gen)
    x = torch.randn(2, 6, 5, 7, generator=gen)  # B, C, H, W
    published = F.conv2d(x, weight, bias, padding=1, groups=6)
    peg = ConditionalPositionEncoding(6, 6)
    peg.load_state_dict({'proj.weight': fold_peg_identity('w', weight), 'proj.bias': bias})
    with torch.no_grad():
        stock = peg(x.flatten(2).transpose(1, 2), (5, 7))
    torch.testing.assert_close(stock, published.flatten(2).transpose(1, 2))


def test_conversion_applies_no_merge_layout(official):
    conversion = convert_official(official)
    assert (conversion.family, conversion.merge_layout) == ('twins', None)
    assert conversion.structure == ('4 stages of depths [2, 2, 2, 2], GSA sub-sampling in '
                                    'stages [0, 1, 2], 1 decoder block(s)')
    with pytest.raises(OfficialCheckpointError,
                       match='applies to Swin checkpoints only.*drop --merge-order'):
        convert_official(official, 'greenmim-2023')


@pytest.mark.parametrize('key, weight, expected', [
    ('encoder.patch_embeds.1.proj.weight', torch.zeros(32, 16, 2, 2),
     "is (32, 16, 2, 2), not spconv's (out, k, k, in=16) layout"),
    ('encoder.blocks.0.1.attn.sr.weight', torch.zeros(16, 16, 8, 8),
     "is (16, 16, 8, 8), not spconv's (out, k, k, in=16) layout"),
    ('encoder.pos_block.2.proj.0.weight', torch.zeros(32, 1, 2, 2),
     'not a depthwise (C, 1, k, k) kernel of odd k'),
])
def test_a_kernel_of_another_layout_is_refused(official, key, weight, expected):
    with pytest.raises(OfficialCheckpointError) as info:
        convert_official_state_dict(dict(official, **{key: weight}))
    assert str(info.value).startswith(f'{key} is') and expected in str(info.value)


def test_missing_and_extra_keys_are_listed(official):
    bad = {k: v for k, v in official.items() if k != 'encoder.blocks.1.1.attn.sr.weight'}
    bad['encoder.pos_embeds.0'] = torch.zeros(1, 3136, 16)  # PVT's, deleted in ALTGVT
    with pytest.raises(OfficialCheckpointError) as info:
        convert_official_state_dict(bad)
    assert str(info.value) == (
        'not a published GreenMIM Twins checkpoint as read from its keys (4 stages of '
        'depths [2, 2, 2, 2], GSA sub-sampling in stages [0, 1, 2], 1 decoder block(s)): '
        '1 unknown key: encoder.pos_embeds.0; 1 missing key: '
        'encoder.blocks.1.1.attn.sr.weight')


def test_file_conversion_resumes_pretraining(official, tmp_path):
    """``load_from`` (mmengine's ``load_checkpoint``) reads the converted file into the
    Twins-L pretraining model strictly."""
    src = tmp_path / 'checkpoint-799.pth'
    torch.save(dict(model=official, epoch=799, args=argparse.Namespace(mask_ratio=0.75)),
               src)
    dst = tmp_path / 'converted.pth'
    conversion = convert_official_checkpoint(str(src), str(dst))
    assert torch.load(dst, weights_only=True)['meta']['family'] == 'twins'
    model = build_pretrain_model('twins-large', TINY_TWINS)
    load_checkpoint(model, str(dst), strict=True, logger='silent')
    for key, value in conversion.state_dict.items():
        assert torch.equal(model.state_dict()[key], value), key
