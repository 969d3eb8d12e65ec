"""One equivalence check for the visible-only backbones (Swin, Swin V2, Twins-SVT).

:func:`check_equivalence` holds ``backbone(img, mask)`` -- forward and backward, every
output -- equal to the masked dense reference of its family
(``swin_reference.masked_dense_forward(_v2)`` / ``twins_reference.masked_dense_forward``,
the stock modules on the dense map with masked keys excluded and masked tokens read
as zero by every conv) at the visible tokens. The reference maps are read in the
documented token layout written in ``tests/helpers.py``, not with the package's own
layout code, so a layout change fails here too.

The tiny builders make models in eval mode with random weights: norms and biases
perturbed, position bias tables large enough that a wrong index shows.
"""
from typing import Callable, Dict, List, Optional, Sequence

import torch
import swin_reference
import twins_reference
from helpers import visible_layout_tokens
from mmpretrain.models.backbones import SVT, SwinTransformer, SwinTransformerV2
from torch import Tensor, nn

from greenmim_mm.models.backbones import (GreenMIMSVT, GreenMIMSwinTransformer,
                                          GreenMIMSwinTransformerV2)

TOL = dict(rtol=1e-4, atol=1e-4)
SWIN_TINY = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[2, 2, 4, 4])
SWIN_V2_TINY = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[2, 2, 4, 4],
                    extra_norm_every_n_blocks=0)


def twins_tiny_arch(window: int = 4, **overrides) -> dict:
    """A tiny SVT: 16-32-32-64 channels, LSA + GSA in every stage, sr 8/4/2/1."""
    arch = dict(embed_dims=[16, 32, 32, 64], depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
                patch_sizes=[4, 2, 2, 2], strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                sr_ratios=[8, 4, 2, 1], window_sizes=[window] * 4)
    arch.update(overrides)
    return arch


def build_swin(seed: int = 0, **kwargs) -> GreenMIMSwinTransformer:
    """A tiny GreenMIM Swin (32 channels, window 7 unless given) in eval mode."""
    cfg = dict(arch=SWIN_TINY, drop_path_rate=0., out_indices=(0, 1, 2, 3))
    cfg.update(kwargs)
    torch.manual_seed(seed)
    model = GreenMIMSwinTransformer(**cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if 'relative_position_bias_table' in name or 'absolute_pos_embed' in name:
                param.normal_(0, 1)  # large enough that a wrong bias index shows
            elif param.dim() == 1:  # norm weights/biases, linear biases
                param.add_(torch.randn_like(param) * 0.1)
    model.eval()  # mmpretrain's Swin.train() returns None: no chaining
    return model


def build_swin_v2(seed: int = 0, above_clamp: bool = False,
                  **kwargs) -> GreenMIMSwinTransformerV2:
    """A tiny GreenMIM Swin V2 (16 channels, window 8 unless given) in eval mode.

    Perturbed so that every V2 feature shows: the continuous position bias MLP's
    output layer scaled up (a wrong index or table moves the bias by several units),
    ``logit_scale`` drawn per head around its init (``log 10``), q/v biases nonzero.
    ``above_clamp``: the first head of every block gets ``logit_scale`` 5, above the
    clamp ``log(100)``, so that a missing clamp shows. Logits scaled by 100 make the
    softmax so sharp that fp32 rounding differences reach 1e-4 in the gradients:
    compare such a model in float64.
    """
    cfg = dict(arch=SWIN_V2_TINY, drop_path_rate=0., out_indices=(0, 1, 2, 3))
    cfg.update(kwargs)
    torch.manual_seed(seed)
    model = GreenMIMSwinTransformerV2(**cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('cpb_mlp.2.weight'):
                param.mul_(20)
            elif name.endswith('logit_scale'):
                param.add_(torch.randn_like(param) * 0.5)
                if above_clamp:
                    param[0] = 5.0  # clamped to log(100) = 4.6
            elif param.dim() == 1:  # norm weights/biases, linear and q/v biases
                param.add_(torch.randn_like(param) * 0.1)
    model.eval()
    return model


def build_twins(seed: int = 0, window: int = 4, arch: Optional[dict] = None,
                **kwargs) -> GreenMIMSVT:
    """A tiny GreenMIM Twins-SVT (:func:`twins_tiny_arch`) in eval mode."""
    cfg = dict(arch=arch or twins_tiny_arch(window), drop_path_rate=0.,
               out_indices=(0, 1, 2, 3))
    cfg.update(kwargs)
    torch.manual_seed(seed)
    model = GreenMIMSVT(**cfg)
    model.init_weights()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:  # norm weights/biases, linear and conv biases
                param.add_(torch.randn_like(param) * 0.1)
    model.eval()
    return model


BUILDERS: Dict[str, Callable[..., nn.Module]] = dict(
    swin=build_swin, swin_v2=build_swin_v2, twins=build_twins)
"""Family name -> tiny builder; both take ``seed`` and the backbone's arguments."""


def masked_dense_forward(model: nn.Module, img: Tensor, mask: Tensor) -> List[Tensor]:
    """The masked dense reference of ``model``'s family: ``(B, H_i, W_i, C_i)`` maps."""
    if isinstance(model, SwinTransformer):
        return swin_reference.masked_dense_forward(model, img, mask)
    if isinstance(model, SwinTransformerV2):
        return swin_reference.masked_dense_forward_v2(model, img, mask)
    if isinstance(model, SVT):
        return twins_reference.masked_dense_forward(model, img, mask)
    raise TypeError(f'no masked dense reference for {type(model).__name__}')


def reference_tokens(model: nn.Module, img: Tensor, mask: Tensor) -> List[Tensor]:
    """The reference outputs at the visible tokens, in the documented layout."""
    return [visible_layout_tokens(dense, mask)
            for dense in masked_dense_forward(model, img, mask)]


def loss_of(outs: Sequence[Tensor], seed: int = 1) -> Tensor:
    """A loss with random weights on every output (so every stage is checked)."""
    generator = torch.Generator().manual_seed(seed)
    weights = [torch.randn(out.shape, generator=generator) for out in outs]
    return sum((out * weight).sum() for out, weight in zip(outs, weights))


def grads(model: nn.Module, img: Tensor) -> Dict[str, Tensor]:
    """Gradients of the image and of every parameter (zeros where there is none)."""
    found = dict(model.named_parameters(), img=img)
    return {name: torch.zeros_like(t) if t.grad is None else t.grad.clone()
            for name, t in found.items()}


def assert_grads_close(actual: Dict[str, Tensor], expected: Dict[str, Tensor]) -> None:
    """fp32 closeness of two gradient sets, the absolute part scaled to each tensor."""
    for name, ref in expected.items():
        scale = max(ref.abs().max().item(), 1.0)
        torch.testing.assert_close(actual[name], ref, rtol=1e-4, atol=1e-4 * scale,
                                   msg=lambda m: f'grad of {name}: {m}')


def check_equivalence(model: nn.Module, img: Tensor, mask: Tensor,
                      seed: Optional[int] = None) -> None:
    """Forward and backward of ``model(img, mask)`` equal the masked dense reference.

    ``seed``: seed torch's global generator before each side (for train-mode checks
    whose dropout/drop path draws must be the same on both sides).
    """
    img = img.clone().requires_grad_(True)
    if seed is not None:
        torch.manual_seed(seed)
    outs = model(img, mask)
    assert len(outs) == len(model.out_indices)
    loss_of(outs).backward()
    visible_grads = grads(model, img)

    model.zero_grad()
    img.grad = None
    if seed is not None:
        torch.manual_seed(seed)
    refs = reference_tokens(model, img, mask)
    loss_of(refs).backward()
    reference_grads = grads(model, img)
    model.zero_grad()

    for i, out, ref in zip(model.out_indices, outs, refs):
        assert out.shape == ref.shape, f'stage {i}'
        torch.testing.assert_close(out, ref, **TOL, msg=lambda m: f'stage {i}: {m}')
    assert_grads_close(visible_grads, reference_grads)
