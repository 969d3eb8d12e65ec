"""This project's side of the converter tests: the pretraining configs of the published
models, built with a tiny variant of their architecture (everything else -- windows,
norms, decoder, loss -- as the config says), and their loss on a given mask."""
import os.path as osp
from typing import Optional, Tuple, Union

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from official_models import PublishedSwin, PublishedTwins
from test_downstream_configs import shapes_only
from torch import Tensor, nn

import greenmim_mm  # noqa: F401  (registration)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PRETRAIN_CONFIGS = {
    'swin-base-w7': 'configs/pretrain/greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py',
    'swin-large-w14':
        'configs/pretrain/greenmim_swin-large-w14_8xb256-amp-coslr-800e_in1k.py',
    'twins-large': 'configs/pretrain/greenmim_twins-large_8xb256-amp-coslr-800e_in1k.py',
}


def mmpretrain_arch(published: Union[PublishedSwin, PublishedTwins]) -> dict:
    """The ``arch`` dict of mmpretrain's Swin / SVT for a published architecture."""
    if isinstance(published, PublishedSwin):
        return dict(embed_dims=published.embed_dim, depths=list(published.depths),
                    num_heads=list(published.num_heads))
    stages = len(published.depths)
    return dict(embed_dims=list(published.embed_dims), depths=list(published.depths),
                num_heads=list(published.num_heads),
                patch_sizes=[published.patch_size] + [2] * (stages - 1),
                strides=[published.patch_size] + [2] * (stages - 1),
                mlp_ratios=list(published.mlp_ratios),
                sr_ratios=list(published.sr_ratios),
                window_sizes=[published.window_size] * stages)


def pretrain_config(name: str,
                    published: Optional[Union[PublishedSwin, PublishedTwins]]) -> Config:
    """The pretraining config ``name``, with ``published``'s arch (and decoder input)
    unless None."""
    cfg = Config.fromfile(osp.join(REPO_ROOT, PRETRAIN_CONFIGS[name]))
    if published is not None:
        cfg.model.backbone.arch = mmpretrain_arch(published)
        cfg.model.neck.embed_dim = published.width
    return cfg


def build_pretrain_model(name: str,
                         published: Optional[Union[PublishedSwin, PublishedTwins]],
                         device: str = 'cpu') -> nn.Module:
    """``GreenMIM`` built from the pretraining config ``name`` with ``published``'s arch
    (None: the configured one), on ``device`` (``'meta'``: shapes only, built without
    drawing the random weights), in eval mode."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        if device == 'meta':
            with shapes_only():
                model = MODELS.build(pretrain_config(name, published).model).to('meta')
        else:
            model = MODELS.build(pretrain_config(name, published).model).to(device)
    model.eval()
    return model


def converted(model: nn.Module, img: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """``GreenMIM``'s ``(loss, predictions (B, units, unit**2 * 3))`` of ``img`` under
    the unit ``mask`` ``(Hu, Wu)`` (True = masked) shared by the batch, as the
    published code shares one."""
    samples = [DataSample().set_mask(mask.clone()) for _ in range(img.shape[0])]
    with torch.no_grad():
        loss = model.loss(img, samples)['loss']
        pred = model.predict_pixels(img, mask.expand(img.shape[0], *mask.shape))
    return loss, pred
