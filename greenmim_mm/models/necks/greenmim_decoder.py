"""The GreenMIM decoder: an MAE decoder at mask-unit resolution."""
from typing import Optional, Tuple

import torch
from mmengine.model import BaseModule
from mmpretrain.models.necks import MAEPretrainDecoder
from mmpretrain.registry import MODELS
from torch import Tensor

from ...ops.masking import visible_unit_ids


def unit_position_embedding(grid_hw: Tuple[int, int], dims: int,
                            temperature: float = 10000.,
                            device: Optional[torch.device] = None) -> Tensor:
    """MAE's fixed 2-D sin-cos positions of a ``(Hu, Wu)`` grid, ``(1, Hu*Wu, dims)``.

    Units in row-major order; channels ``[sin(c w), cos(c w), sin(r w), cos(r w)]`` for
    unit ``(r, c)``, with ``w_k = temperature ** (-k / (dims / 4))``: on a square grid
    this is MAE's ``get_2d_sincos_pos_embed`` table (without the class token), which
    the published GreenMIM decoder uses. (mmpretrain's
    ``build_2d_sincos_position_embedding`` builds the transposed table, and on a
    non-square grid it gives units the positions of another grid.) Computed on
    ``device`` (float64 math, float32 result): a few tiny kernels, no host copy.
    """
    if dims % 4:
        raise ValueError(f'The decoder width must be a multiple of 4, got {dims}.')
    rows, cols = torch.meshgrid(
        torch.arange(grid_hw[0], dtype=torch.float64, device=device),
        torch.arange(grid_hw[1], dtype=torch.float64, device=device),
        indexing='ij')  # Hu, Wu
    steps = torch.arange(dims // 4, dtype=torch.float64, device=device)
    omega = temperature**(-steps / (dims / 4))
    angle_col = cols.reshape(-1, 1) * omega  # Hu*Wu, dims/4
    angle_row = rows.reshape(-1, 1) * omega
    table = torch.cat([angle_col.sin(), angle_col.cos(), angle_row.sin(),
                       angle_row.cos()], dim=1)
    return table.float()[None]


@MODELS.register_module()
class GreenMIMDecoder(MAEPretrainDecoder):
    """MAE's pretraining decoder on the mask-unit grid, without a class token.

    The encoder returns one token per visible mask unit (token ``i`` = ``i``-th visible
    unit in row-major order, see :mod:`greenmim_mm.ops.masking`). The decoder projects
    them to ``decoder_embed_dim``, places them on the ``(Hu, Wu)`` unit grid with a
    learned mask token at every masked unit, adds fixed 2-D sin-cos positions of that
    grid (:func:`unit_position_embedding`), runs ``decoder_depth`` transformer blocks
    and predicts the ``patch_size x patch_size x in_chans`` pixels of every unit.

    The blocks, norm, prediction layer and mask token are MAE's
    (:class:`MAEPretrainDecoder`). MAE's position table is fixed to one square grid
    with a class token; here positions are built for the grid of the mask at hand, so
    any unit grid works (non-square included), and cached per grid.

    Args:
        patch_size: Side of a mask unit in pixels: each unit predicts
            ``patch_size ** 2 * in_chans`` values. Defaults to 32.
        decoder_depth: Number of decoder blocks. Defaults to 1 (the paper).
        **kwargs: ``MAEPretrainDecoder`` arguments: ``embed_dim`` (the encoder's output
            channels), ``decoder_embed_dim`` (512), ``decoder_num_heads`` (16),
            ``mlp_ratio``, ``in_chans``, ``norm_cfg``, ``predict_feature_dim``,
            ``init_cfg``. ``num_patches`` is taken from the mask and is not accepted.
    """

    def __init__(self, patch_size: int = 32, decoder_depth: int = 1, **kwargs) -> None:
        if 'num_patches' in kwargs:
            raise TypeError(
                'GreenMIMDecoder takes the unit grid from the mask: remove num_patches '
                'from its config.')
        super().__init__(
            num_patches=1, patch_size=patch_size, decoder_depth=decoder_depth,
            **kwargs)
        # MAE's table holds one fixed square grid plus a class token; positions here
        # come from the grid of each mask (see ``position_embedding``).
        del self.decoder_pos_embed

    def init_weights(self) -> None:
        """MAE's initialisation, less the position table this decoder does not have."""
        BaseModule.init_weights(self)
        torch.nn.init.normal_(self.mask_token, std=.02)

    def position_embedding(self, grid_hw: Tuple[int, int], like: Tensor) -> Tensor:
        """Fixed 2-D sin-cos positions of a ``(Hu, Wu)`` grid, ``(1, Hu*Wu, D)``, on
        ``like``'s device and in its dtype (recomputed per call: no module state, so a
        compiled step neither guards nor recompiles on a cache)."""
        pos = unit_position_embedding(grid_hw, self.mask_token.shape[-1],
                                      device=like.device)
        return pos.to(like.dtype)

    def forward(self, x: Tensor, mask: Tensor,  # type: ignore[override]
                unit_ids: Optional[Tensor] = None) -> Tensor:
        """Predict the pixels of every mask unit.

        Args:
            x: ``(B, N_vis, embed_dim)`` encoder tokens, one per visible unit, in
                row-major order of the visible units.
            mask: ``(B, Hu, Wu)`` bool unit mask, True = masked (only its grid is
                read when ``unit_ids`` is given).
            unit_ids: ``(B, N_vis)`` row-major ids of the visible units, on ``x``'s
                device (the plan's ``unit_ids``); computed from ``mask`` when None.

        Returns:
            ``(B, Hu*Wu, patch_size**2 * in_chans)`` predictions in row-major unit
            order, for the visible units too (the loss reads the masked ones).
        """
        batch, grid_h, grid_w = mask.shape
        if unit_ids is None:
            unit_ids = visible_unit_ids(mask)  # B, N_vis
        if unit_ids.shape[1] != x.shape[1]:
            raise ValueError(
                f'The mask has {unit_ids.shape[1]} visible units per sample but the '
                f'encoder returned {x.shape[1]} tokens: pass the mask the encoder saw.')
        x = self.decoder_embed(x)  # B, N_vis, D
        dims = x.shape[-1]
        unit_ids = unit_ids.to(x.device, non_blocking=True)
        tokens = self.mask_token.to(x.dtype).expand(batch, grid_h * grid_w, dims)
        tokens = tokens.scatter(1, unit_ids[..., None].expand(-1, -1, dims), x)  # B, L, D
        tokens = tokens + self.position_embedding((grid_h, grid_w), tokens)
        for block in self.decoder_blocks:
            tokens = block(tokens)
        tokens = self.decoder_norm(tokens)
        return self.decoder_pred(tokens)  # B, L, p*p*C
