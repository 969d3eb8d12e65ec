"""Twins-SVT for SimMIM: the baseline GreenMIM Twins is compared with.

mmpretrain trains Swin the SimMIM way with ``SimMIMSwinTransformer`` (in its
``models/selfsup/simmim.py``): the dense backbone sees the whole image, and the patch
tokens of the masked patches are replaced by a learned mask token right after the patch
embedding. mmpretrain has no such Twins; ``SimMIMSVT`` is that change applied to its
``SVT``, so the stock ``SimMIM`` algorithm (``SimMIMLinearDecoder``, ``SimMIMHead``)
can pretrain a Twins with the same arguments as ``GreenMIMSVT``.
"""
from typing import Optional, Tuple

from mmpretrain.models.backbones import SVT
from mmpretrain.registry import MODELS
from torch import Tensor

from ..backbones.greenmim_twins import set_patch_norms
from .mask_token import MaskTokenMixin


@MODELS.register_module()
class SimMIMSVT(MaskTokenMixin, SVT):
    """Twins-SVT for SimMIM: masked patch tokens replaced by a learned mask token.

    ``forward(img, mask)`` with a ``(B, H / 4, W / 4)`` patch mask (1 = masked, as
    ``SimMIMMaskGenerator`` makes it) is ``PCPVT.forward`` with one change after the
    stage-1 patch embedding: ``x = x * (1 - w) + mask_token * w``. ``forward(img)``
    is the stock forward. Arguments are those of ``SVT``, and ``patch_norm_cfg`` as
    ``GreenMIMSVT``'s (the norm of the patch embeddings).
    """

    def __init__(self, *args, patch_norm_cfg: Optional[dict] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        set_patch_norms(self, patch_norm_cfg)
        self._init_mask_token(self.embed_dims[0])

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
        if mask is None:
            return super().forward(x)
        batch = x.shape[0]
        outputs = []
        for i in range(self.num_stage):
            x, hw_shape = self.patch_embeds[i](x)  # B, H*W, C
            if i == 0:
                x = self.replace_masked(x, mask)
            x = self.position_encoding_drops[i](x)
            for j, layer in enumerate(self.stages[i]):
                x = layer(x, hw_shape)
                if j == 0:
                    x = self.position_encodings[i](x, hw_shape)
            x = getattr(self, f'norm_after_stage{i}')(x)
            x = x.reshape(batch, *hw_shape, -1).permute(0, 3, 1, 2).contiguous()
            if i in self.out_indices:
                outputs.append(x)
        return tuple(outputs)
