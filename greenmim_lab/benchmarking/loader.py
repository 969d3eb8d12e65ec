"""The ``loader`` section: the CPU an input pipeline spends per image, stage by stage.

A visible-only step is cheap, so the loader must deliver several times more images per
second than for SimMIM, from the few cores a GPU node has per GPU. This section runs,
side by side and interleaved round by round, on JPEGs it makes (scikit-image's
photographs, cut to ImageNet's typical ~500x430 px, a little grain, quality 95:
~100 KB, as ImageNet's):

- this project's pretraining pipeline (the Swin-B config: ``TensorRandomResizedCrop``,
  flip, unit masks, ``greenmim_collate`` with the packed plan);
- the same with mmpretrain's Pillow ``RandomResizedCrop`` (the pipeline before);
- the same with the decode and crop on the training device
  (:mod:`greenmim_mm.datasets.device_decode`): the workers' share only (read the bytes
  and the header, draw, mask, plan); the images handed over are the JPEG bytes;
- MAE's stock mmpretrain pipeline (``imagenet_bs512_mae.py``) and SimMIM's Swin-B one
  (192 px, cv2 bilinear crop, SimMIM masks), each with ``default_collate``.

Every stage is timed in thread-CPU time (one torch/OpenCV thread: what one loader
worker spends, little disturbed by other jobs), per image; the collate (with the plan)
is timed per batch and divided by its size. Also the bytes per image of the batch the
workers hand over (images, masks, plan), and how many cores per GPU each pipeline needs
at 1,000 / 3,000 / 6,000 images/s.
"""
import os
import os.path as osp
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch

from .comparisons import GREENMIM_CONFIGS, SIMMIM_SWIN_CONFIG, load_config
from .measure import time_repeats

MAE_CONFIG = 'mmpretrain::_base_/datasets/imagenet_bs512_mae.py'
DEVICE_DECODE_CONFIG = 'configs/_base_/datasets/imagenet_bs256_greenmim_device-decode.py'
STAGES = {  # transform type -> column
    'LoadImageFromFile': 'load + decode',
    'LoadJPEGBytes': 'load + decode',
    'RandomResizedCrop': 'crop + resize',
    'TensorRandomResizedCrop': 'crop + resize',
    'DeferredRandomResizedCrop': 'crop + resize',
    'RandomFlip': 'flip',
    'DeferredRandomFlip': 'flip',
    'GreenMIMMaskGenerator': 'mask',
    'SimMIMMaskGenerator': 'mask',
    'PackInputs': 'pack',
}
COLUMNS = ('load + decode', 'crop + resize', 'flip', 'mask', 'pack', 'other',
           'collate (+ plan)')
RATES = (1000, 3000, 6000)


def make_jpegs(folder: str, count: int = 64, seed: int = 0) -> List[str]:
    """``count`` JPEGs of ImageNet-like size (~500x430 px, quality 95, a little grain, ~100 KB)
    cut from scikit-image's colour photographs, rescaled and cropped at random."""
    import cv2
    from skimage import data

    from greenmim_mm.datasets import DEMO_PHOTOS, load_rgb_image

    rng = np.random.default_rng(seed)
    names = ('astronaut', 'chelsea', 'coffee', 'motorcycle', 'rocket', 'retina',
             'immunohistochemistry', 'hubble_deep_field')
    photos = [load_rgb_image(osp.join(data.data_dir, DEMO_PHOTOS[name])) for name in names]
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        height, width = int(rng.integers(375, 500)), int(rng.integers(450, 560))
        scale = max(height / photo.shape[0], width / photo.shape[1]) * rng.uniform(1, 1.5)
        big = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        top = int(rng.integers(0, big.shape[0] - height + 1))
        left = int(rng.integers(0, big.shape[1] - width + 1))
        image = big[top:top + height, left:left + width]
        if rng.random() < 0.5:
            image = image[:, ::-1]
        grain = rng.normal(0, 5, image.shape)  # a camera's noise: ImageNet's ~110 KB
        image = np.clip(image + grain, 0, 255).astype(np.uint8)
        path = osp.join(folder, f'{i:04d}.jpg')
        cv2.imwrite(path, np.ascontiguousarray(image[..., ::-1]),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        paths.append(path)
    return paths


@dataclass
class LoaderPipeline:
    """A named pipeline: its transforms (built) and its collate function."""
    name: str
    transforms: list
    collate: Callable[[list], dict]


def _pipeline_cfgs(arch: str) -> Dict[str, tuple]:
    """name -> (transform configs, collate config) of the pipelines compared."""
    from greenmim_mm.datasets.collate import bind_collate_backbone

    greenmim = load_config(GREENMIM_CONFIGS['swin'][arch])
    bind_collate_backbone(greenmim)
    loader = greenmim.train_dataloader
    steps = [dict(step) for step in loader.dataset.pipeline]
    before = [dict(step, type='RandomResizedCrop', backend='pillow')
              if step['type'] == 'TensorRandomResizedCrop' else step for step in steps]
    device = load_config(DEVICE_DECODE_CONFIG).train_pipeline
    default = dict(type='default_collate')
    return {
        f'GreenMIM Swin-{arch[0].upper()} (this project)': (steps, loader.collate_fn),
        'GreenMIM, Pillow crop (before)': (before, loader.collate_fn),
        'GreenMIM, decode on the device (workers only)': (device, loader.collate_fn),
        'MAE (mmpretrain)': (load_config(MAE_CONFIG).train_pipeline, default),
        'SimMIM Swin-B 192 px (mmpretrain)': (
            load_config(SIMMIM_SWIN_CONFIG).train_dataloader.dataset.pipeline, default),
    }


def build_pipelines(arch: str = 'base') -> List[LoaderPipeline]:
    from mmengine.registry import FUNCTIONS, DefaultScope
    from mmpretrain.registry import TRANSFORMS

    pipelines = []
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        for name, (steps, collate) in _pipeline_cfgs(arch).items():
            collate = dict(collate)
            fn = FUNCTIONS.get(collate.pop('type'))
            pipelines.append(LoaderPipeline(
                name, [TRANSFORMS.build(dict(step)) for step in steps],
                lambda batch, fn=fn, kwargs=collate: fn(batch, **kwargs)))
    return pipelines


def tensor_bytes(value) -> int:
    """Bytes of the tensors in a collated batch (dicts, lists, data samples, plans)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if hasattr(value, 'nbytes') and not isinstance(value, np.ndarray):
        return int(value.nbytes)  # a packed plan
    if hasattr(value, '__dataclass_fields__'):  # a working plan
        return sum(tensor_bytes(getattr(value, f)) for f in value.__dataclass_fields__)
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    if hasattr(value, 'all_items'):  # an mmengine data element
        return sum(tensor_bytes(v) for _, v in value.all_items())
    return 0


def _time_images(pipeline: LoaderPipeline, paths: Sequence[str]) -> tuple:
    """``(ms per image by column, samples)`` of one pass over ``paths``."""
    spent: Dict[str, float] = defaultdict(float)
    samples = []
    for path in paths:
        results = dict(img_path=path)
        for transform in pipeline.transforms:
            start = time.thread_time()
            results = transform(results)
            spent[STAGES.get(type(transform).__name__, 'other')] += time.thread_time() - start
        samples.append(results)
    return {k: 1e3 * v / len(paths) for k, v in spent.items()}, samples


def loader_table(arch: str = 'base', images: int = 64, batch: int = 256,
                 repeats: int = 5, seed: int = 0, device: str = 'cpu') -> dict:
    """ms of CPU per image by stage, images/s per core and bytes per image."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    np.random.seed(seed)
    torch.manual_seed(seed)
    pipelines = build_pipelines(arch)
    times: Dict[str, Dict[str, List[float]]] = {p.name: defaultdict(list)
                                                 for p in pipelines}
    sizes: Dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = make_jpegs(folder, images, seed)
        kbytes = statistics.mean(osp.getsize(p) for p in paths) / 1e3
        decode = device_decode_table(paths, device, batch, repeats)
        for round_ in range(repeats + 1):  # round 0 warms up
            for pipeline in pipelines:
                per_image, samples = _time_images(pipeline, paths)
                batch_samples = [samples[i % len(samples)] for i in range(batch)]
                start = time.thread_time()
                collated = pipeline.collate(batch_samples)
                per_image['collate (+ plan)'] = 1e3 * (time.thread_time() - start) / batch
                if round_ == 0:
                    sizes[pipeline.name] = _batch_bytes(collated, batch)
                    continue
                for column in COLUMNS:
                    times[pipeline.name][column].append(per_image.get(column, 0.0))
    rows, core_rows = [], []
    for pipeline in pipelines:
        medians = [statistics.median(times[pipeline.name][c]) for c in COLUMNS]
        total = sum(medians)
        rate = 1e3 / total
        rows.append((pipeline.name, *medians, total, rate,
                     *sizes[pipeline.name].values()))
        core_rows.append((pipeline.name, rate, *(r / rate for r in RATES)))
    header = ('pipeline', *(f'{c} ms' for c in COLUMNS), 'total ms', 'img/s per core',
              'images KB', 'masks KB', 'plan KB', 'plan unpacked KB', 'handed over KB')
    load = os.getloadavg()[0]
    notes = (f'{images} JPEGs made from scikit-image photographs ({kbytes:.0f} KB, '
             f'~500x430 px, quality 95); thread-CPU ms per image, one torch/OpenCV '
             f'thread, medians of {repeats} interleaved rounds after one warm-up; '
             f'collate per batch of {batch} / {batch}; bytes per image of the collated '
             f'batch of {batch} (the packed plan); load average {load:.1f}.', )
    cores = dict(title='Loader cores per GPU', header=(
        'pipeline', 'img/s per core', *(f'cores at {r:,} img/s' for r in RATES)),
        rows=core_rows, notes=('cores = images/s per GPU / images/s per core '
                               '(the workers alone, no main-process work).', ))
    return dict(title='Input pipeline: CPU per image', header=header, rows=rows,
                notes=notes, cores=cores, decode=decode)


def device_decode_table(paths: Sequence[str], device: str = 'cpu', batch: int = 256,
                        repeats: int = 5) -> dict:
    """The training process's share of the decode-on-the-device path: wall time of
    :func:`~greenmim_mm.datasets.decode_crop_batch` on ``device`` for a batch (on the
    CPU: torchvision's CPU decoder, one thread, a stand-in)."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import TRANSFORMS

    from greenmim_mm.datasets import decode_crop_batch

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        transforms = [TRANSFORMS.build(dict(step)) for step in
                      load_config(DEVICE_DECODE_CONFIG).train_pipeline]
    samples = []
    for i in range(batch):
        results = dict(img_path=paths[i % len(paths)])
        for transform in transforms:
            results = transform(results)
        samples.append(results)
    inputs = [sample['inputs'] for sample in samples]
    data_samples = [sample['data_samples'] for sample in samples]
    timing = time_repeats(lambda: decode_crop_batch(inputs, data_samples, device),
                          repeats, torch.device(device))
    wall = timing.median_ms()
    name = torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU, one thread'
    return dict(title='Decode + crop on the training device', header=(
        'device', 'batch', 'ms per batch', 'images/s'),
        rows=[(name, batch, wall, 1e3 * batch / wall)],
        notes=(f'decode_crop_batch (decode_jpeg on a list, crop, resize, flip), wall '
               f'time, median of {repeats} after one warm-up.', ))


def _batch_bytes(collated: dict, batch: int) -> dict:
    """KB per image of the images, the masks and the plan of a collated batch."""
    images = tensor_bytes(collated['inputs'])
    masks = sum(tensor_bytes(getattr(s, 'mask', None)) for s in collated['data_samples'])
    plan = collated.get('plan')
    packed = tensor_bytes(plan)
    unpacked = tensor_bytes(plan.to('cpu')) if plan is not None else 0
    total = images + masks + packed
    return {k: v / batch / 1e3 for k, v in dict(
        images=images, masks=masks, plan=packed, unpacked=unpacked, total=total).items()}
