"""GreenMIM: masked image modeling on the visible mask units of a hierarchical ViT.

``loss()`` is the whole recipe: take the batch's plan (made from the per-sample unit
masks in the data loader by ``greenmim_collate``; made here from the data samples'
masks when a batch has none), encode the visible units only (``backbone(img,
plan=plan)``), decode every unit (``GreenMIMDecoder``) and score the masked ones
(``MAEPretrainHead``: MSE on per-unit normalised pixels).
"""
import logging
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmpretrain.models.selfsup import BaseSelfSupervisor
from mmpretrain.models.utils import SelfSupDataPreprocessor
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from ...ops.masking import MASK_MODES, apply_mask_mode, check_unit_mask
from ..backbones.base import check_not_compiling
from ...ops.visible_plan import VisiblePlan


@MODELS.register_module()
class GreenMIMDataPreprocessor(SelfSupDataPreprocessor):
    """``SelfSupDataPreprocessor`` that moves the batch's plan and leaves masks alone.

    - ``data['plan']`` (a :class:`~greenmim_mm.ops.visible_plan.PackedVisiblePlan` of
      CPU tensors from ``greenmim_collate``, pinned by the DataLoader) is copied to the
      device with non-blocking copies, unpacked there and returned as ``plan``;
    - the data samples' unit masks stay on the CPU (mmengine would move every tensor
      of a data sample; a device mask read back for planning would stall the GPU);
    - a batch of JPEG bytes with deferred crops (``inputs`` a list, see
      :mod:`greenmim_mm.datasets.device_decode`) is decoded, cropped and flipped on the
      device first.
    Everything else is ``SelfSupDataPreprocessor`` (same arguments).

    It runs eagerly under ``torch.compile`` (one graph break): traced, it would guard
    on every data sample's metainfo (file names, shapes) and recompile each step.
    """

    @torch.compiler.disable
    def forward(self, data: dict, training: bool = False) -> dict:
        data = dict(data)
        plan = data.pop('plan', None)
        samples = data.get('data_samples') or []
        inputs = data.get('inputs')
        if isinstance(inputs, (list, tuple)) and samples and 'crop_box' in samples[0]:
            from ...datasets.device_decode import decode_crop_batch  # JPEG bytes
            data['inputs'] = decode_crop_batch(inputs, samples, self.device)
        masks = [sample.pop('mask', None) for sample in samples]
        try:
            out = super().forward(data, training)
        finally:
            for sample, mask in zip(samples, masks):
                if mask is not None:
                    sample.mask = mask
        for sample, mask in zip(out['data_samples'] or [], masks):
            if mask is not None:
                sample.mask = mask
        if plan is not None:
            out['plan'] = plan.to(out['inputs'].device, non_blocking=True)
        return out


@MODELS.register_module()
class GreenMIM(BaseSelfSupervisor):
    """GreenMIM (Huang et al., NeurIPS 2022): MAE-style pretraining of hierarchical ViTs.

    Implementation of `Green Hierarchical Vision Transformer for Masked Image Modeling
    <https://arxiv.org/abs/2205.13515>`_.

    The backbone must accept ``backbone(img, mask)`` and return a tuple whose last
    item is ``(B, N_vis, C)``: one token per visible mask unit, in row-major order of
    the visible units (``GreenMIMSwinTransformer`` with ``out_indices=(3,)``).

    Args:
        backbone: Config of the visible-only backbone.
        neck: Config of the decoder, e.g. ``GreenMIMDecoder``.
        head: Config of the reconstruction head, e.g. ``MAEPretrainHead(norm_pix=True,
            patch_size=32)``. mmpretrain's head patchifies square images only.
        mask_mode: ``'sample'`` (default) uses each sample's own mask; ``'batch'`` uses
            the first sample's mask for the whole batch, like the published code (give
            ``greenmim_collate`` the same ``mask_mode``).
        data_preprocessor: Defaults to ``GreenMIMDataPreprocessor`` (keeps the masks
            on the CPU); a dict without ``type`` gets that type.
        **kwargs: Passed on to ``BaseSelfSupervisor`` (``init_cfg``, ...).
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 mask_mode: str = 'sample',
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 **kwargs) -> None:
        if mask_mode not in MASK_MODES:
            raise ValueError(
                f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}: 'sample' "
                "draws a mask per image, 'batch' shares one across the batch.")
        if data_preprocessor is None or isinstance(data_preprocessor, dict):
            data_preprocessor = dict(data_preprocessor or {})
            data_preprocessor.setdefault('type', 'GreenMIMDataPreprocessor')
        super().__init__(
            backbone=backbone, neck=neck, head=head,
            data_preprocessor=data_preprocessor, **kwargs)
        self.mask_mode = mask_mode

    def unit_masks(self, inputs: Tensor, data_samples: List[DataSample]) -> Tensor:
        """Stack the masks of the samples into ``(B, Hu, Wu)`` bool, on the CPU.

        Checks them against the images: one unit is ``head.patch_size`` pixels.
        """
        if not data_samples or 'mask' not in data_samples[0]:
            raise ValueError(
                'GreenMIM needs a unit mask per sample: add '
                "dict(type='GreenMIMMaskGenerator') before PackInputs in the pipeline.")
        mask = torch.stack([sample.mask for sample in data_samples])
        if mask.device.type != 'cpu':
            warnings.warn(
                'The unit masks reached GreenMIM on the device; copying them back to '
                'the CPU synchronises it every step. Use '
                "data_preprocessor=dict(type='GreenMIMDataPreprocessor').")
            mask = mask.cpu()
        check_unit_mask(mask)
        unit = self.head.patch_size
        height, width = inputs.shape[-2:]
        if (mask.shape[1] * unit, mask.shape[2] * unit) != (height, width):
            raise ValueError(
                f'Masks of {mask.shape[1]}x{mask.shape[2]} units of {unit} px do not '
                f'cover {height}x{width} images: give GreenMIMMaskGenerator '
                f'mask_unit={unit} (the head patch_size) and run it after the crop.')
        if height != width:
            raise ValueError(
                f'mmpretrain\'s MAEPretrainHead only patchifies square images, got '
                f'{height}x{width}: crop the images to a square size.')
        return apply_mask_mode(mask, self.mask_mode)

    def forward(self, inputs: Tensor, data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor', plan: Optional[VisiblePlan] = None):
        """``BaseSelfSupervisor.forward``, passing the batch's ``plan`` to :meth:`loss`."""
        if mode == 'loss':
            return self.loss(inputs, data_samples, plan=plan)
        return super().forward(inputs, data_samples, mode)

    def batch_plan(self, inputs: Tensor, data_samples: List[DataSample],
                   plan: Optional[VisiblePlan] = None) -> VisiblePlan:
        """The batch's plan: the loader's, or one made here from the samples' masks."""
        if plan is None:
            check_not_compiling()
            if self.training and not getattr(self, '_warned_no_plan', False):
                self._warned_no_plan = True
                print_log(
                    'The batches have no plan from the data loader: the training '
                    'process plans every step (CPU work the GPU waits for). Use '
                    "collate_fn=dict(type='greenmim_collate') with the model's backbone "
                    '(tools/train.py binds it; with your own Runner call '
                    'greenmim_mm.datasets.bind_collate_backbone(cfg)).',
                    logger='current', level=logging.WARNING)
            mask = self.unit_masks(inputs, data_samples)  # CPU
            return self.backbone.visible_plan(inputs, mask).to(inputs.device)
        if plan.shared_mask != (self.mask_mode == 'batch'):
            raise ValueError(
                f"The model has mask_mode='{self.mask_mode}' but the data loader planned "
                f"{'one mask per batch' if plan.shared_mask else 'a mask per sample'}: "
                "give greenmim_collate the model's mask_mode.")
        return plan

    def predict_pixels(self, inputs: Tensor, mask: Optional[Tensor] = None,
                       plan: Optional[VisiblePlan] = None) -> Tensor:
        """Encoder on the visible units, then decoder: ``(B, Hu*Wu, unit*unit*3)``.

        Give the ``(B, Hu, Wu)`` unit ``mask`` (planned here) or the batch's ``plan``.
        """
        if plan is None:
            plan = self.backbone.visible_plan(inputs, mask).to(inputs.device)
        latent = self.backbone(inputs, plan=plan)[-1]  # B, N_vis, C
        return self.neck(latent, plan.mask, plan.unit_ids)

    def loss(self, inputs: Tensor, data_samples: List[DataSample],
             plan: Optional[VisiblePlan] = None, **kwargs) -> Dict[str, Tensor]:
        """MSE on the normalised pixels of the masked units.

        Args:
            inputs: ``(B, 3, H, W)`` normalised images.
            data_samples: Their data samples, each with a ``(Hu, Wu)`` bool ``mask``.
            plan: the batch's plan from ``greenmim_collate`` (on the device), or None
                to plan here from the samples' masks.
        """
        plan = self.batch_plan(inputs, data_samples, plan)
        pred = self.predict_pixels(inputs, plan=plan)
        weight = plan.mask.flatten(1).to(pred.dtype)  # B, L: 1 = masked unit
        return dict(loss=self.head.loss(pred, inputs, weight))

    @torch.no_grad()
    def reconstruct(self, inputs: Tensor, data_samples: List[DataSample],
                    statistics: Union[str, Sequence[str]] = 'unit'
                    ) -> Union[Tensor, Tuple[Tensor, ...]]:
        """The predicted image, ``(B, 3, H, W)``, in the space of ``inputs``.

        With ``head.norm_pix`` the decoder predicts each unit normalised by its own
        pixel mean and std (one mean and one std over the unit's ``p*p*3`` values, as
        the loss's target), and ``statistics`` says which mean and std bring it back:

        - ``'unit'``: each unit's own, taken from the input, as MAE's figures do: the
          picture shows the predicted structure with the true brightness and contrast
          of every unit (so partly the original's colours);
        - ``'visible'``: one mean and one std for the whole image, those of its
          visible units (the mean of their means, the root mean of their variances):
          the picture then depends only on what the encoder saw, and shows what the
          model predicts on its own.

        A sequence of them gives one image each, from one forward pass. Without
        ``norm_pix`` the prediction already is in the space of ``inputs``.
        """
        names = (statistics, ) if isinstance(statistics, str) else tuple(statistics)
        for name in names:
            if name not in ('unit', 'visible'):
                raise ValueError(
                    f"statistics must be 'unit' or 'visible', got {name!r}")
        mask = self.unit_masks(inputs, data_samples)  # B, Hu, Wu on the CPU
        pred = self.predict_pixels(inputs, mask)  # B, L, p*p*3
        images = tuple(self.head.unpatchify(self._to_pixels(pred, inputs, mask, name))
                       for name in names)
        return images[0] if isinstance(statistics, str) else images

    def _to_pixels(self, pred: Tensor, inputs: Tensor, mask: Tensor,
                   statistics: str) -> Tensor:
        """``pred`` (B, L, p*p*3) brought back with the ``statistics`` of
        :meth:`reconstruct` (unchanged without ``norm_pix``)."""
        if not self.head.norm_pix:
            return pred
        target = self.head.patchify(inputs)  # B, L, p*p*3
        mean = target.mean(dim=-1, keepdim=True)  # B, L, 1
        var = target.var(dim=-1, keepdim=True)  # B, L, 1
        if statistics == 'visible':
            visible = (~mask.flatten(1)).to(pred)[..., None]  # B, L, 1
            count = visible.sum(dim=1, keepdim=True)  # B, 1, 1
            mean = (mean * visible).sum(dim=1, keepdim=True) / count
            var = (var * visible).sum(dim=1, keepdim=True) / count
        return pred * (var + 1.e-6)**.5 + mean
