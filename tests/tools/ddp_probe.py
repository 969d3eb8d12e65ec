"""A hook that records, in every process of a run, what the DDP test asserts on.

Imported by the tiny GreenMIM config through ``GREENMIM_TEST_HOOKS=ddp_probe`` (with
``tests/tools`` on the PYTHONPATH). It writes ``<work_dir>/probe/``:

- ``start_iter{i}_rank{r}.pth``: at ``before_train`` (after ``--resume`` has loaded),
  the model's state dict and the optimizer's state dict;
- ``iter{i}_rank{r}.pth``: for the first iteration of the run, the batch as the data
  loader gave it, every mask that reached the backbone (in its plan), and whether any
  data sample's mask was handed to the data preprocessor's device move (``cast_data``).
"""
import os
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.structures import BaseDataElement
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class DDPProbeHook(Hook):
    priority = 'LOWEST'

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self.folder = osp.join(runner.work_dir, 'probe')
        os.makedirs(self.folder, exist_ok=True)
        torch.save(dict(state_dict=model.state_dict(),
                        optimizer=runner.optim_wrapper.state_dict()),
                   osp.join(self.folder, f'start_iter{runner.iter}_rank{get_rank()}.pth'))
        self.first_iter = runner.iter
        self.backbone_masks = []
        self.masks_cast = False
        model.backbone.register_forward_pre_hook(self._record_mask, with_kwargs=True)
        preprocessor = model.data_preprocessor
        cast_data = preprocessor.cast_data

        def recording_cast_data(data):  # called again for every item it recurses into
            if isinstance(data, BaseDataElement) and 'mask' in data:
                self.masks_cast = True
            return cast_data(data)

        preprocessor.cast_data = recording_cast_data

    def _record_mask(self, module, args, kwargs) -> None:
        """The mask the backbone planned with: in the plan (from the loader) or bare."""
        plan = kwargs.get('plan')
        self.backbone_masks.append(plan.mask if plan is not None else args[1])

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter != self.first_iter:  # the loop counts the iteration after this
            return
        torch.save(dict(batch=data_batch, masks_cast=self.masks_cast,
                        backbone_masks=self.backbone_masks),
                   osp.join(self.folder, f'iter{self.first_iter}_rank{get_rank()}.pth'))
