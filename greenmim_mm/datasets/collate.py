"""``greenmim_collate``: batch the samples and plan the visible-only forward, in the
DataLoader workers.

The training process of a visible-only model should only launch device work: every
index derived from the masks (grouping plans, gather rows of the sparse convs, the
visible units) is built here, on the CPU, in the loader's worker processes, while the
device runs the previous step. The batch gains a ``plan`` entry, a
:class:`~greenmim_mm.ops.visible_plan.PackedVisiblePlan` of CPU tensors (pinned by the
DataLoader when ``pin_memory=True``), which ``GreenMIMDataPreprocessor`` copies to the
device without blocking and ``GreenMIM`` hands to its backbone.

Configs name it; the geometry comes from one place, the model's backbone config::

    train_dataloader = dict(collate_fn=dict(type='greenmim_collate'), ...)

:func:`bind_collate_backbone` fills ``collate_fn.backbone`` from ``model.backbone`` once
the config is merged (``tools/train.py`` and every tool of this project call it through
``greenmim_cli.launch.load_config``; with your own Runner, call it on the config
first or set ``backbone`` yourself: without it, training still works, but the model
plans each batch in the training process and says so once).

The backbone is built once per worker (then moved to the ``meta`` device, which frees
its weights) to read its :meth:`visible_geometry`; the model checks every plan against its own geometry, so a
collate configured for another backbone stops the first step with an error naming the
difference, never trains on a wrong plan.
"""
import copy
import json
from typing import Any, Dict, Sequence, Tuple

import torch
from mmengine.dataset import default_collate
from mmengine.registry import FUNCTIONS

from ..ops.masking import MASK_MODES, apply_mask_mode
from ..ops.visible_plan import VisibleGeometry, pack_visible_plan

_BACKBONES: Dict[str, Any] = {}  # per process: backbone config (JSON) -> meta backbone


def _meta_backbone(backbone: dict):
    """The backbone of ``backbone`` (a config dict) on the meta device, built once.

    (Built on the CPU: mmpretrain's constructors read tensor values, which the meta
    device cannot; ``to('meta')`` then drops the weights.)
    """
    key = json.dumps(backbone, sort_keys=True, default=str)
    if key not in _BACKBONES:
        from mmpretrain.registry import MODELS
        model = MODELS.build(dict(backbone)).to('meta')
        if not hasattr(model, 'visible_geometry'):
            raise TypeError(
                f'greenmim_collate plans for visible-only backbones (GreenMIM '
                f'Swin/Twins), got {type(model).__name__}: give it the backbone config '
                'of the GreenMIM model.')
        _BACKBONES[key] = model
    return _BACKBONES[key]


def collate_geometry(backbone: dict, img_hw: Tuple[int, int]) -> VisibleGeometry:
    """The :class:`VisibleGeometry` of ``backbone`` (a config) for ``img_hw`` images."""
    model = _meta_backbone(backbone)
    return model.checked_geometry(torch.empty(1, 3, *img_hw, device='meta'))


def bind_collate_backbone(cfg) -> None:
    """Give every ``greenmim_collate`` of ``cfg``'s dataloaders the model's backbone.

    Only where ``backbone`` is not set: an explicit one is kept, and the model checks
    every plan against its own geometry.
    """
    backbone = cfg.get('model', {}).get('backbone')
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        collate = (cfg.get(name) or {}).get('collate_fn')
        if (isinstance(collate, dict) and collate.get('type') == 'greenmim_collate'
                and collate.get('backbone') is None and backbone is not None):
            collate['backbone'] = copy.deepcopy(backbone)


@FUNCTIONS.register_module()
def greenmim_collate(data_batch: Sequence[dict], backbone: dict = None,
                     mask_mode: str = 'sample') -> dict:
    """mmengine's ``default_collate`` plus the batch's ``plan``.

    Args:
        data_batch: samples from a pipeline ending with ``GreenMIMMaskGenerator`` and
            ``PackInputs`` (each data sample has a ``(Hu, Wu)`` bool ``mask``).
        backbone: the config of the model's visible-only backbone (``model.backbone``;
            :func:`bind_collate_backbone` fills it from the config). Without it the
            batch has no plan and the model plans in the training step (it warns).
        mask_mode: ``'sample'`` (each image its own mask) or ``'batch'`` (the first
            sample's mask for all, as the published code; the samples' masks are
            replaced too, so pictures show what the model saw).

    Returns:
        ``dict(inputs=(B, 3, H, W), data_samples=[...], plan=PackedVisiblePlan)``;
        ``inputs`` is the list of the samples' tensors when they differ in shape (JPEG
        bytes of a pipeline that decodes on the device)
        (the plan packed for the trip; its ``to(device)`` is the working plan).
    """
    if backbone is not None and not isinstance(backbone, dict):
        raise ValueError(f'backbone must be the backbone config (a dict), got {backbone!r}.')
    if mask_mode not in MASK_MODES:
        raise ValueError(f'mask_mode must be one of {MASK_MODES}, got {mask_mode!r}.')
    inputs = [sample['inputs'] for sample in data_batch]
    # a pipeline that crops on the device says so per sample (its deferred crop box),
    # whatever the shapes: images decoded in the worker may all have one size
    samples_in = [sample.get('data_samples') for sample in data_batch]
    encoded = any(sample is not None and 'crop_box' in sample for sample in samples_in)
    if encoded:  # decoded and cropped on the device (datasets/device_decode.py)
        rest = default_collate([{k: v for k, v in sample.items() if k != 'inputs'}
                                for sample in data_batch])
        batch = dict(inputs=inputs, **rest)  # inputs first: the preprocessor reads in order
    else:
        batch = default_collate(data_batch)
    samples = batch['data_samples']
    if not samples or 'mask' not in samples[0]:
        raise ValueError(
            'greenmim_collate needs a unit mask per sample: add '
            "dict(type='GreenMIMMaskGenerator') before PackInputs in the pipeline.")
    mask = torch.stack([sample.mask for sample in samples]).bool()  # B, Hu, Wu
    mask = apply_mask_mode(mask, mask_mode)
    if mask_mode == 'batch':
        for sample, sample_mask in zip(samples, mask):
            sample.mask = sample_mask
    if backbone is None:  # nothing to plan for: the model plans in the step (and says so)
        return batch
    img_hw = tuple(samples[0].crop_size) if encoded else tuple(batch['inputs'].shape[-2:])
    geometry = collate_geometry(backbone, img_hw)
    batch['plan'] = pack_visible_plan(geometry, mask, shared_mask=mask_mode == 'batch')
    return batch
