"""SimMIMSVT: the Twins that the benchmark trains the SimMIM way."""
import pytest
import torch
from helpers import random_masks
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import greenmim_mm  # noqa: F401  (registers SimMIMSVT)

TINY_SVT = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
                patch_sizes=[4, 2, 2, 2], strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                sr_ratios=[4, 2, 1, 1], window_sizes=[4, 4, 4, 4])
IMAGE = 64  # px: 2x2 units of 32 px, a 16x16 grid of 4 px patches

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def patch_masks(batch: int, seed: int = 0) -> torch.Tensor:
    """``(B, 16, 16)`` SimMIM patch masks (1 = masked) from random 32 px unit masks."""
    units = random_masks(batch, (2, 2), 1, seed)
    return units.repeat_interleave(8, 1).repeat_interleave(8, 2).int()


def build_simmim(seed: int = 0):
    torch.manual_seed(seed)
    model = MODELS.build(dict(
        type='SimMIM',
        backbone=dict(type='SimMIMSVT', arch=TINY_SVT, out_indices=(3, )),
        neck=dict(type='SimMIMLinearDecoder', in_channels=128, encoder_stride=32),
        head=dict(type='SimMIMHead', patch_size=4,
                  loss=dict(type='PixelReconstructionLoss', criterion='L1', channel=3))))
    model.init_weights()
    return model


def test_masked_patches_become_the_mask_token():
    """After the stage-1 patch embedding, masked tokens are the mask token and the
    visible ones are untouched."""
    backbone = build_simmim().backbone
    img, mask = torch.randn(2, 3, IMAGE, IMAGE), patch_masks(2)
    seen = {}
    backbone.position_encoding_drops[0].register_forward_hook(
        lambda module, args, out: seen.update(tokens=args[0]))
    with torch.no_grad():
        backbone(img, mask)
        embedded = backbone.patch_embeds[0](img)[0]  # B, H*W, C
    masked = mask.flatten(1).bool()  # B, H*W
    tokens = seen['tokens']
    assert masked.any() and (~masked).any()
    torch.testing.assert_close(tokens[masked],
                               backbone.mask_token[0].expand(int(masked.sum()), -1))
    torch.testing.assert_close(tokens[~masked], embedded[~masked])


def test_without_mask_is_the_stock_forward():
    backbone = build_simmim().backbone
    img = torch.randn(1, 3, IMAGE, IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(backbone(img)[0], super(type(backbone), backbone)
                                   .forward(img)[0])


def test_simmim_loss_step_trains_the_mask_token():
    model = build_simmim()
    img, mask = torch.randn(2, 3, IMAGE, IMAGE), patch_masks(2, seed=1)
    samples = [DataSample().set_mask(m) for m in mask]
    loss = model.loss(img, samples)['loss']
    assert torch.isfinite(loss)
    loss.backward()
    assert model.backbone.mask_token.grad.abs().sum() > 0
