"""Log reconstruction pictures to the visualizer backends while pretraining."""
from typing import Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from ...datasets.device_decode import decode_crop_batch
from ...visualization import reconstruction_panels


@HOOKS.register_module()
class ReconstructionVisualizationHook(Hook):
    """Draw original | masked | reconstruction | reconstruction + visible every N iters.

    The pictures go to every backend of the runner's visualizer under ``name``
    (``LocalVisBackend``: ``<work_dir>/<timestamp>/vis_data/vis_image/<name>_<iter>.png``;
    ``TensorboardVisBackend``: the Images tab). The first ``num_images`` samples of
    the first training batch are kept, masks included, and drawn each time, so the
    pictures show the same images as training goes on: before the first step, every
    ``interval`` iterations and after the last one. Only the main process draws.

    Args:
        interval: Draw every ``interval`` training iterations. Defaults to 1000.
        num_images: Rows of the picture (images of the first batch). Defaults to 2.
        name: Image name for the visualizer. Defaults to ``'reconstruction'``.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 1000, num_images: int = 2,
                 name: str = 'reconstruction') -> None:
        if interval < 1 or num_images < 1:
            raise ValueError(
                f'interval and num_images must be positive, got {interval} and '
                f'{num_images}.')
        self.interval = interval
        self.num_images = num_images
        self.name = name
        self._batch: Optional[dict] = None

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        if self._batch is not None or data_batch is None:
            return
        inputs = data_batch['inputs'][:self.num_images]
        samples = list(data_batch['data_samples'][:self.num_images])
        if isinstance(inputs, (list, tuple)) and samples and 'crop_box' in samples[0]:
            inputs = decode_crop_batch(list(inputs), samples, 'cpu')  # JPEG bytes
        elif isinstance(inputs, (list, tuple)):  # pseudo_collate: list of (3, H, W)
            inputs = torch.stack(list(inputs))
        self._batch = dict(inputs=inputs.clone(), data_samples=samples)
        if runner.iter == 0:
            self._draw(runner, step=0)

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if (self.every_n_train_iters(runner, self.interval)
                or self.is_last_train_iter(runner)):
            self._draw(runner, step=runner.iter + 1)

    def _draw(self, runner, step: int) -> None:
        if self._batch is None or not is_main_process():
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        panels = reconstruction_panels(model, dict(self._batch))
        runner.visualizer.add_image(self.name, panels, step=step)
