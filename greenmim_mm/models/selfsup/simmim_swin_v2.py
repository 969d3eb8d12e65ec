"""Swin Transformer V2 for SimMIM: the baseline GreenMIM Swin V2 is compared with.

mmpretrain trains Swin the SimMIM way with ``SimMIMSwinTransformer`` (its
``models/selfsup/simmim.py``): the dense backbone sees the whole image, and the patch
tokens of the masked patches are replaced by a learned mask token right after the patch
embedding. mmpretrain has no such Swin V2 (the SimMIM paper pretrains Swin V2 this way);
``SimMIMSwinTransformerV2`` is that change applied to its ``SwinTransformerV2``, so the
stock ``SimMIM`` algorithm (``SimMIMLinearDecoder``, ``SimMIMHead``) can pretrain a
Swin V2 with the same arguments as ``GreenMIMSwinTransformerV2``.
"""
from typing import Optional, Tuple

from mmpretrain.models.backbones import SwinTransformerV2
from mmpretrain.models.utils import resize_pos_embed
from mmpretrain.registry import MODELS
from torch import Tensor

from .mask_token import MaskTokenMixin


@MODELS.register_module()
class SimMIMSwinTransformerV2(MaskTokenMixin, SwinTransformerV2):
    """Swin V2 for SimMIM: masked patch tokens replaced by a learned mask token.

    ``forward(img, mask)`` with a ``(B, H / 4, W / 4)`` patch mask (1 = masked, as
    ``SimMIMMaskGenerator`` makes it) is ``SwinTransformerV2.forward`` with one change
    after the patch embedding: ``x = x * (1 - w) + mask_token * w`` (as mmpretrain's
    ``SimMIMSwinTransformer``). ``forward(img)`` is the stock forward. Arguments are
    those of ``SwinTransformerV2``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_mask_token(self.embed_dims)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
        if mask is None:
            return super().forward(x)
        x, hw_shape = self.patch_embed(x)  # B, H*W, C
        x = self.replace_masked(x, mask)
        if self.use_abs_pos_embed:
            x = x + resize_pos_embed(self.absolute_pos_embed, self.patch_resolution,
                                     hw_shape, self.interpolate_mode,
                                     self.num_extra_tokens)
        x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw_shape = stage(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(x)  # B, H*W, C
                outs.append(out.view(-1, *hw_shape, stage.out_channels)
                            .permute(0, 3, 1, 2).contiguous())  # B, C, H, W
        return tuple(outs)
