"""The one change SimMIM makes to a dense backbone: after the patch embedding, the tokens
of masked patches are replaced by a learned mask token (mmpretrain's
``SimMIMSwinTransformer`` does it inline; the SimMIM baselines here share this mixin)."""
import torch
from torch import Tensor, nn


class MaskTokenMixin:
    """Adds ``mask_token`` (call :meth:`_init_mask_token` in ``__init__``), its
    initialisation, and :meth:`replace_masked`; mixed in before the backbone class."""

    def _init_mask_token(self, dims: int) -> None:
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dims))

    def init_weights(self) -> None:
        super().init_weights()  # type: ignore[misc]
        nn.init.trunc_normal_(self.mask_token, mean=0, std=.02)

    def replace_masked(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x * (1 - w) + mask_token * w`` for tokens ``(B, H*W, C)`` and a patch mask
        ``(B, H, W)`` (1 = masked)."""
        w = mask.flatten(1).unsqueeze(-1).type_as(x)  # B, H*W, 1
        return x * (1. - w) + self.mask_token.expand(x.shape[0], x.shape[1], -1) * w
