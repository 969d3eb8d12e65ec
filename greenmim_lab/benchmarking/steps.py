"""A model's training step as mmengine's train loop runs it, and the batches it eats.

Batches are made the way a training run makes them, outside the timed region: random
images through the config's own training pipeline (minus the file loading; JPEG bytes
for a pipeline that decodes on the device, which the timed step then decodes), collated
by the config's own ``train_dataloader.collate_fn``, with a ``DataLoader`` built by
mmengine's ``Runner.build_dataloader``. What is timed is then only the training
process's work, ``model.train_step(batch, optim_wrapper)``: data preprocessor (the
copy to the device included), forward, backward and the optimizer update.
"""
import copy
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
from mmengine.config import Config
from torch import Tensor

SOURCE_SIZE = 256  # px of the random images the pipelines crop from


@dataclass
class StepOptions:
    """How every model of a benchmark is trained."""
    device: str = 'cpu'
    amp: bool = False  # autocast: AmpOptimWrapper on CUDA, torch.autocast on the CPU
    amp_dtype: str = 'bfloat16'
    compile: bool = False  # torch.compile(model.train_step), as mmengine's compile=True
    compile_backend: str = 'inductor'
    compile_mode: Optional[str] = None  # e.g. 'reduce-overhead': CUDA graphs
    fused_adamw: bool = False
    threads: Optional[int] = None
    seed: int = 0


class RandomImages(torch.utils.data.Dataset):
    """``num`` random uint8 images through a training pipeline without its file loading
    (a pipeline that decodes on the device, ``LoadJPEGBytes``, gets them as JPEG bytes)."""

    def __init__(self, pipeline_cfg: list, num: int, seed: int = 0) -> None:
        from mmengine.dataset import Compose

        self.jpeg = any(step['type'] == 'LoadJPEGBytes' for step in pipeline_cfg)
        self.pipeline = Compose(
            [step for step in pipeline_cfg if step['type'] != 'LoadImageFromFile'])
        self.num, self.seed = num, seed

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, index))
        img = rng.integers(0, 256, (SOURCE_SIZE, SOURCE_SIZE, 3), dtype=np.uint8)
        if self.jpeg:
            import cv2
            jpeg = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
            return self.pipeline(dict(img_bytes=jpeg, img_path=f'random_{index}.jpg'))
        return self.pipeline(dict(img=img, ori_shape=img.shape[:2],
                                  img_shape=img.shape[:2]))


def train_pipeline(cfg: Config) -> list:
    return cfg.get('train_pipeline') or cfg.train_dataloader.dataset.pipeline


def make_batches(cfg: Config, batch_size: int, num_batches: int,
                 options: StepOptions) -> List[dict]:
    """``num_batches`` batches as the config's training DataLoader yields them."""
    from mmengine.runner import Runner

    with scope(cfg):
        parallel = options.device == 'cuda' and num_batches > 1  # GPU machines
        loader_cfg = dict(
            batch_size=batch_size,
            num_workers=min(num_batches, os.cpu_count() or 1) if parallel else 0,
            pin_memory=options.device == 'cuda',
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=RandomImages(train_pipeline(cfg), batch_size * num_batches,
                                 options.seed))
        collate_fn = cfg.get('train_dataloader', {}).get('collate_fn')
        if collate_fn is not None:  # else the Runner's own default, pseudo_collate
            loader_cfg['collate_fn'] = copy.deepcopy(collate_fn)
        return list(Runner.build_dataloader(loader_cfg, seed=options.seed))


def scope(cfg: Config):
    """The config's registry scope (mmpretrain unless it names another)."""
    from mmengine.registry import DefaultScope
    return DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain'))


class TrainStep:
    """``step(batch)``: one ``model.train_step(batch, optim_wrapper)``, returning the loss.

    Every model gets the same optimizer: AdamW, lr 1e-4, betas (0.9, 0.95), wd 0.05,
    no clipping (``fused=True`` with ``options.fused_adamw``); with ``options.amp``,
    ``AmpOptimWrapper`` on CUDA and ``torch.autocast`` on the CPU, in
    ``options.amp_dtype``. The model is built as mmengine's Runner builds it (the
    config's top-level ``data_preprocessor`` merged in) and, with ``options.compile``,
    its ``train_step`` is compiled as the Runner's ``compile=True`` does.
    """

    def __init__(self, cfg: Config, options: StepOptions) -> None:
        from mmengine.logging import MMLogger
        from mmengine.optim import AmpOptimWrapper, OptimWrapper
        from mmengine.registry import MODELS

        self.device = torch.device(options.device)
        model_cfg = copy.deepcopy(cfg.model)
        if cfg.get('data_preprocessor') is not None:
            model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
        with scope(cfg):
            self.model = MODELS.build(model_cfg)
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel('WARNING')  # init_weights logs every parameter
        try:
            self.model.init_weights()
        finally:
            logger.setLevel(level)
        self.model.to(self.device).train()
        fused = dict(fused=True) if options.fused_adamw else {}
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4,
                                      betas=(0.9, 0.95), weight_decay=0.05, **fused)
        dtype = getattr(torch, options.amp_dtype)
        if options.amp and self.device.type == 'cuda':
            self.optim_wrapper = AmpOptimWrapper(optimizer=optimizer, dtype=dtype,
                                                 loss_scale='dynamic')
        else:
            self.optim_wrapper = OptimWrapper(optimizer=optimizer)
        self.cpu_autocast = options.amp and self.device.type == 'cpu'
        self.dtype = dtype
        # dynamic=False: the models of a comparison share code (train_step, the
        # blocks), and dynamo's automatic dynamic shapes would otherwise recompile the
        # second model with symbolic shapes (minutes of sympy for GreenMIM's indices).
        self.compile_options = (dict(backend=options.compile_backend, dynamic=False,
                                     mode=options.compile_mode)
                                if options.compile else None)

    def compile(self) -> None:
        """Compile ``model.train_step`` (as ``Runner._maybe_compile``) if asked to."""
        if self.compile_options is not None:
            # Each TrainStep compiles the same code (train_step) for another model:
            # one cache entry per model, not a fall-back to eager after the 8th.
            dynamo_config = torch._dynamo.config
            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
            # Both models' data preprocessors run eagerly (GreenMIM's always does):
            # traced, they guard on every sample's metainfo and recompile each step.
            preprocessor = self.model.data_preprocessor
            preprocessor.forward = torch.compiler.disable(preprocessor.forward)
            self.model.train_step = torch.compile(self.model.train_step,
                                                  **self.compile_options)

    def __call__(self, batch: dict) -> Tensor:
        autocast = (torch.autocast('cpu', dtype=self.dtype) if self.cpu_autocast
                    else nullcontext())
        with autocast:
            return self.model.train_step(batch, self.optim_wrapper)['loss'].detach()
