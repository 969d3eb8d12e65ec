"""SimMIMSwinTransformerV2: the Swin V2 that the benchmark trains the SimMIM way."""
import pytest
import torch
from equivalence import SWIN_V2_TINY
from mmpretrain.models.backbones import SwinTransformerV2
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from test_simmim_twins import IMAGE, patch_masks

import greenmim_mm  # noqa: F401  (registers SimMIMSwinTransformerV2)

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def build_simmim(seed: int = 0):
    torch.manual_seed(seed)
    model = MODELS.build(dict(
        type='SimMIM',
        backbone=dict(type='SimMIMSwinTransformerV2', arch=SWIN_V2_TINY, window_size=2,
                      img_size=IMAGE, out_indices=(3, )),
        neck=dict(type='SimMIMLinearDecoder', in_channels=128, encoder_stride=32),
        head=dict(type='SimMIMHead', patch_size=4,
                  loss=dict(type='PixelReconstructionLoss', criterion='L1', channel=3))))
    model.init_weights()
    return model


def test_masked_patches_become_the_mask_token():
    """After the patch embedding, masked tokens are the mask token and the visible
    ones are untouched."""
    backbone = build_simmim().backbone
    img, mask = torch.randn(2, 3, IMAGE, IMAGE), patch_masks(2)
    seen = {}
    backbone.drop_after_pos.register_forward_hook(
        lambda module, args, out: seen.update(tokens=args[0]))
    with torch.no_grad():
        backbone(img, mask)
        embedded = backbone.patch_embed(img)[0]  # B, H*W, C
    masked = mask.flatten(1).bool()  # B, H*W
    tokens = seen['tokens']
    assert masked.any() and (~masked).any()
    torch.testing.assert_close(tokens[masked],
                               backbone.mask_token[0].expand(int(masked.sum()), -1))
    torch.testing.assert_close(tokens[~masked], embedded[~masked])


def test_with_mask_is_the_stock_forward_after_the_embedding():
    """Masking nothing gives the stock features; without a mask it is the stock."""
    backbone = build_simmim().backbone
    backbone.eval()  # no drop path
    img = torch.randn(1, 3, IMAGE, IMAGE)
    with torch.no_grad():
        stock = SwinTransformerV2.forward(backbone, img)[0]
        torch.testing.assert_close(backbone(img)[0], stock, rtol=0, atol=0)
        nothing = torch.zeros(1, IMAGE // 4, IMAGE // 4, dtype=torch.int)
        torch.testing.assert_close(backbone(img, nothing)[0], stock)


def test_simmim_loss_step_trains_the_mask_token():
    model = build_simmim()
    img, mask = torch.randn(2, 3, IMAGE, IMAGE), patch_masks(2, seed=1)
    samples = [DataSample().set_mask(m) for m in mask]
    loss = model.loss(img, samples)['loss']
    assert torch.isfinite(loss)
    loss.backward()
    assert model.backbone.mask_token.grad.abs().sum() > 0
