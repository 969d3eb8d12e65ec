"""Gradient accumulation counted in the batch: the paper's 2048 images on fewer GPUs.

mmengine accumulates gradients over ``optim_wrapper.accumulative_counts = K``
micro-batches (``OptimWrapper.update_params`` divides each micro-batch's loss by K and
steps every K-th call), but ``Runner.scale_lr`` (``--auto-scale-lr``) scales the lr by
GPUs x batch per GPU alone: 2 GPUs x 256 x 4 scaled the paper's lr by 512 / 2048.
:class:`AccumulatingRunner` counts K: the batch of one update is
GPUs x ``train_dataloader.batch_size`` x K.

The update of K micro-batches of b images equals the update of one batch of K x b (the
same images and masks): GreenMIM's loss (``PixelReconstructionLoss``) is the mean over
the masked units of the batch, every sample masks as many units, so the mean over K x b
samples is the mean of the K micro-batch means, and mmengine sums the K gradients of
``loss / K``. (Models with batch statistics, e.g. BatchNorm, would differ; GreenMIM's
have none.) A schedule still counts iterations, i.e. micro-batches: an epoch is the
same number of images, ``max_iters`` is K times the updates.
"""
from typing import Dict, Optional, Union

from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import RUNNERS
from mmengine.runner import Runner


def accumulative_counts(optim_wrapper: Union[OptimWrapper, Dict, None]) -> int:
    """K of an optim wrapper (built or its config): micro-batches per update."""
    if isinstance(optim_wrapper, OptimWrapperDict):
        counts = {wrapper._accumulative_counts for wrapper in optim_wrapper.values()}
        return counts.pop() if len(counts) == 1 else 1
    if isinstance(optim_wrapper, OptimWrapper):
        return optim_wrapper._accumulative_counts
    if isinstance(optim_wrapper, dict):
        return int(optim_wrapper.get('accumulative_counts', 1))
    return 1


def batch_of_one_update(world_size: int, batch_size: int, counts: int) -> int:
    """Images in one optimizer update: processes x batch per process x micro-batches."""
    return world_size * batch_size * counts


@RUNNERS.register_module()
class AccumulatingRunner(Runner):
    """mmengine's ``Runner`` whose ``auto_scale_lr`` counts gradient accumulation."""

    def scale_lr(self, optim_wrapper: OptimWrapper,
                 auto_scale_lr: Optional[Dict] = None) -> None:
        """mmengine's linear scaling rule with the batch of one update: the lr times
        GPUs x batch per GPU x ``accumulative_counts`` / ``base_batch_size``."""
        counts = accumulative_counts(optim_wrapper)
        if counts == 1 or not (auto_scale_lr or {}).get('enable', False):
            return super().scale_lr(optim_wrapper, auto_scale_lr)
        # mmengine's rule with a base batch K times smaller: same ratio, its checks
        scaled = dict(auto_scale_lr, base_batch_size=auto_scale_lr['base_batch_size'] /
                      counts)
        self.logger.info(f'Accumulating gradients over {counts} micro-batches: an '
                         'update sees GPUs x batch per GPU x '
                         f'{counts} images (the next line counts one micro-batch).')
        return super().scale_lr(optim_wrapper, scaled)
