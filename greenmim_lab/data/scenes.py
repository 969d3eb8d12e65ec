"""Synthetic scenes of textured shapes: an unlabelled pretraining set and a labelled
few-shot task from the same generator, made on the spot from a seed.

A scene is a textured background with a few small textured *distractor* shapes and one
large *main* shape drawn on top of them. Every surface (background and each shape) is
filled with its own texture -- solid, stripes, checks, dots or smooth noise -- at a
random scale and angle, in two colours: a base colour and one near it (lower contrast
on the background); each shape's base colour is picked far from the background's. The main shape's kind (one of
:data:`SHAPE_KINDS`) is the label of the downstream task; colours and textures are
drawn independently of it, so only the outline tells the class.

Pretraining sees the same scenes without their labels. Three independent random
streams of one seed make the unlabelled set, the labelled training pool and the test
set, so no image is in two of them and changing one set's size leaves the others as
they are. The layout is ImageNet-style, what mmpretrain's ``CustomDataset`` reads::

    out_dir/unlabelled/000000.jpg ...             (no labels: with_label=False)
    out_dir/train/<kind>/000000.jpg ...           (the labelled pool)
    out_dir/test/<kind>/000000.jpg ...
    out_dir/train.txt, test.txt                   ('<kind>/<file> <label>' lines)
    out_dir/unlabelled.json, train.json, test.json (what each stream was made with)
    out_dir/fewshot_seed<k>_<n>shot.txt           (the same, for a few-shot split)

Labels index :data:`SHAPE_KINDS`; the annotation files are read with
``data_prefix='train'`` (or ``'test'``) and ``metainfo=dict(classes=SHAPE_KINDS)``.

A few-shot split takes ``shots`` images per class from the pool, a different draw for
each seed (:func:`write_fewshot_split`).
"""
import json
import math
import os
import os.path as osp
import shutil
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

SHAPE_KINDS = ('circle', 'cross', 'ell', 'square', 'star', 'triangle')  # label order
TEXTURES = ('solid', 'stripes', 'checks', 'dots', 'noise')
STREAMS = ('unlabelled', 'train', 'test')
MAIN_RADIUS = (0.25, 0.35)  # circumradius of the main shape, fraction of the image side
DISTRACTOR_RADIUS = (0.04, 0.09)
TEXTURE_PERIOD = (6.0, 16.0)  # pixels
BACKGROUND_CONTRAST = 30.0  # spread of a texture's second colour around its first
SHAPE_CONTRAST = 60.0
NUM_DISTRACTORS = (2, 5)  # [low, high)
JPEG_QUALITY = 95
GENERATOR_VERSION = 2  # bump when the drawing changes: cached sets are redrawn


def _regular(num: int, phase: float = 0.0) -> List[Tuple[float, float]]:
    return [(math.cos(phase + 2 * math.pi * k / num), math.sin(phase + 2 * math.pi * k / num))
            for k in range(num)]


def _star(points: int = 5, inner: float = 0.45) -> List[Tuple[float, float]]:
    outer = _regular(2 * points, -math.pi / 2)
    return [(x * (1 if k % 2 == 0 else inner), y * (1 if k % 2 == 0 else inner))
            for k, (x, y) in enumerate(outer)]


# Outline of each kind as a polygon centred on the origin, inside the unit circle.
_UNIT_SHAPES: Dict[str, List[Tuple[float, float]]] = {
    'circle': _regular(48),
    'triangle': _regular(3, -math.pi / 2),
    'square': _regular(4, math.pi / 4),
    'star': _star(),
    'cross': [(x * 0.7, y * 0.7) for x, y in [
        (-0.33, -1), (0.33, -1), (0.33, -0.33), (1, -0.33), (1, 0.33), (0.33, 0.33),
        (0.33, 1), (-0.33, 1), (-0.33, 0.33), (-1, 0.33), (-1, -0.33), (-0.33, -0.33)]],
    'ell': [(x * 0.7, y * 0.7) for x, y in [
        (-1, -1), (-0.2, -1), (-0.2, 0.2), (1, 0.2), (1, 1), (-1, 1)]],
}


def shape_polygon(kind: str, centre: Tuple[float, float], radius: float,
                  angle: float) -> np.ndarray:
    """Vertices ``(N, 2)`` (x, y) of ``kind`` scaled by ``radius``, rotated, centred."""
    if kind not in _UNIT_SHAPES:
        raise ValueError(f'Unknown shape kind {kind!r}: choose from {SHAPE_KINDS}.')
    rotation = np.array([[math.cos(angle), -math.sin(angle)],
                         [math.sin(angle), math.cos(angle)]])
    return np.array(_UNIT_SHAPES[kind]) @ rotation.T * radius + np.array(centre)


def texture(rng: np.random.Generator, height: int, width: int, base: np.ndarray,
            contrast: float) -> np.ndarray:
    """A random texture, ``(height, width, 3)`` float in [0, 255], of two colours:
    ``base`` and a colour about ``contrast`` away from it (per channel)."""
    second = np.clip(base + rng.normal(0, contrast, 3), 0, 255)
    colours = np.stack([base, second])
    kind = TEXTURES[rng.integers(len(TEXTURES))]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)  # H, W
    angle = rng.uniform(0, math.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle)  # rotated coordinates
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    period = rng.uniform(*TEXTURE_PERIOD)
    if kind == 'solid':
        weight = np.zeros((height, width))
    elif kind == 'stripes':
        weight = (u / period) % 1.0 < 0.5
    elif kind == 'checks':
        weight = (np.floor(u / period) + np.floor(v / period)) % 2 == 1
    elif kind == 'dots':
        du, dv = (u / period) % 1.0 - 0.5, (v / period) % 1.0 - 0.5
        weight = du**2 + dv**2 < 0.09
    else:  # smooth noise: bilinear upsampling of a coarse random grid (8 px cells)
        coarse = rng.uniform(0, 1, (height // 8 + 2, width // 8 + 2))
        image = Image.fromarray((coarse * 255).astype(np.uint8))
        weight = np.asarray(image.resize((coarse.shape[1] * 8, coarse.shape[0] * 8),
                                         Image.BILINEAR),
                            dtype=np.float64)[8:8 + height, 8:8 + width] / 255.0
    weight = np.asarray(weight, dtype=np.float64)[..., None]  # H, W, 1
    return colours[0] * (1 - weight) + colours[1] * weight


def _distinct_colour(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """The one of 8 random colours farthest (in RGB) from ``avoid``."""
    candidates = rng.uniform(0, 255, (8, 3))
    return candidates[np.linalg.norm(candidates - avoid, axis=1).argmax()]


class Shape(NamedTuple):
    """One shape of a scene: its kind, centre (x, y) and circumradius in pixels, angle."""
    kind: str
    centre: Tuple[float, float]
    radius: float
    angle: float

    def polygon(self) -> np.ndarray:
        return shape_polygon(self.kind, self.centre, self.radius, self.angle)


def scene_layout(rng: np.random.Generator, size: int) -> Tuple[List[Shape], int]:
    """The shapes of a scene, in drawing order, and its label.

    Two to four small distractors of any kind anywhere (partly outside the image
    too), then the main shape -- larger than any distractor, fully inside the image,
    drawn last so nothing covers it. The label is the main shape's kind.
    """
    shapes = []
    for _ in range(int(rng.integers(*NUM_DISTRACTORS))):
        kind = SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]
        radius = rng.uniform(*DISTRACTOR_RADIUS) * size
        centre = tuple(rng.uniform(0, size, 2))
        shapes.append(Shape(kind, centre, radius, rng.uniform(0, 2 * math.pi)))
    label = int(rng.integers(len(SHAPE_KINDS)))
    radius = rng.uniform(*MAIN_RADIUS) * size
    centre = tuple(rng.uniform(radius + 2, size - radius - 2, 2))  # fully inside
    shapes.append(Shape(SHAPE_KINDS[label], centre, radius, rng.uniform(0, 2 * math.pi)))
    return shapes, label


def draw_scene(rng: np.random.Generator, size: int = 128) -> Tuple[np.ndarray, int]:
    """One scene: ``(size, size, 3)`` uint8 RGB and the main shape's kind index."""
    shapes, label = scene_layout(rng, size)
    background = rng.uniform(0, 255, 3)
    canvas = texture(rng, size, size, background, BACKGROUND_CONTRAST)
    for shape in shapes:
        outline = shape.polygon()
        mask = Image.new('L', (size, size), 0)
        ImageDraw.Draw(mask).polygon([tuple(p) for p in outline], fill=255)
        colour = _distinct_colour(rng, background)
        # texture only the shape's bounding box (clipped to the image)
        x0, y0 = np.clip(np.floor(outline.min(0)).astype(int), 0, size)
        x1, y1 = np.clip(np.ceil(outline.max(0)).astype(int) + 1, 0, size)
        if x1 <= x0 or y1 <= y0:
            continue  # entirely outside
        inside = np.asarray(mask, dtype=bool)[y0:y1, x0:x1, None]  # h, w, 1
        fill = texture(rng, y1 - y0, x1 - x0, colour, SHAPE_CONTRAST)
        canvas[y0:y1, x0:x1] = np.where(inside, fill, canvas[y0:y1, x0:x1])
    return np.clip(canvas, 0, 255).round().astype(np.uint8), label


def _write_stream(out_dir: str, stream: str, num: int, size: int, seed: int,
                  labelled: bool) -> List[Tuple[str, int]]:
    """Draw ``num`` scenes of one stream and write them; returns (rel. path, label).

    A ``labelled`` stream is drawn until each kind has ``num`` scenes (the surplus of
    a kind is skipped), so the labelled sets are balanced, and is written in one
    folder per kind.
    """
    rng = np.random.default_rng([seed, STREAMS.index(stream)])
    counts = [0] * len(SHAPE_KINDS)
    total = num * len(SHAPE_KINDS) if labelled else num
    items: List[Tuple[str, int]] = []
    while len(items) < total:
        pixels, label = draw_scene(rng, size)
        if labelled and counts[label] >= num:
            continue
        folder = osp.join(stream, SHAPE_KINDS[label]) if labelled else stream
        rel_path = osp.join(folder, f'{counts[label] if labelled else len(items):06d}.jpg')
        os.makedirs(osp.join(out_dir, folder), exist_ok=True)
        Image.fromarray(pixels).save(osp.join(out_dir, rel_path), quality=JPEG_QUALITY)
        counts[label] += 1
        items.append((rel_path, label))
    return items


def make_scene_sets(out_dir: str, num_unlabelled: int = 20000,
                    train_per_class: int = 50, test_per_class: int = 100,
                    size: int = 128, seed: int = 0) -> Dict[str, object]:
    """Write the unlabelled set, the labelled pool and the test set under ``out_dir``.

    A pure function of its arguments (and :data:`GENERATOR_VERSION`). Each stream
    records what it was made with in ``<stream>.json``, written last; a stream whose
    record matches is kept, any other is deleted and drawn again, so a changed test
    set does not redraw the 20000 pretraining scenes and an interrupted run redraws
    only what it did not finish.

    Returns:
        The arguments, ``classes``, ``data_root``, the folders and annotation files.
    """
    if size < 32 or size % 32:
        raise ValueError(f'size must be a positive multiple of 32 (the mask unit), got '
                         f'{size}.')
    if min(num_unlabelled, train_per_class, test_per_class) < 1:
        raise ValueError('num_unlabelled, train_per_class and test_per_class must be '
                         f'>= 1, got {num_unlabelled}, {train_per_class}, '
                         f'{test_per_class}.')
    for stream, num in zip(STREAMS, (num_unlabelled, train_per_class, test_per_class)):
        record = dict(num=num, size=size, seed=seed, version=GENERATOR_VERSION,
                      classes=list(SHAPE_KINDS))
        record_path = osp.join(out_dir, f'{stream}.json')
        if osp.isfile(record_path):
            with open(record_path) as f:
                if json.load(f) == record:
                    continue
            os.remove(record_path)
        shutil.rmtree(osp.join(out_dir, stream), ignore_errors=True)  # no stale files
        labelled = stream != 'unlabelled'
        items = _write_stream(out_dir, stream, num, size, seed, labelled)
        if labelled:
            _write_ann_file(osp.join(out_dir, f'{stream}.txt'), stream, items)
        with open(record_path, 'w') as f:  # last: marks the stream complete
            json.dump(record, f)
    return dict(num_unlabelled=num_unlabelled, train_per_class=train_per_class,
                test_per_class=test_per_class, size=size, seed=seed,
                classes=list(SHAPE_KINDS), data_root=out_dir,
                train_ann=osp.join(out_dir, 'train.txt'),
                test_ann=osp.join(out_dir, 'test.txt'),
                **{f'{stream}_dir': osp.join(out_dir, stream) for stream in STREAMS})


def _write_ann_file(path: str, prefix: str, items: Sequence[Tuple[str, int]]) -> None:
    """``<path below prefix> <label>`` lines, what ``CustomDataset(ann_file=...)`` reads."""
    with open(path, 'w') as f:
        f.writelines(f'{osp.relpath(rel_path, prefix)} {label}\n'
                     for rel_path, label in items)


def write_fewshot_split(out_dir: str, shots: int, seed: int) -> str:
    """Pick ``shots`` images per class from the labelled pool (``out_dir/train.txt``).

    A different draw for each ``seed``. Writes ``out_dir/fewshot_seed<seed>_<shots>shot.txt``
    (the lines of ``train.txt`` that were picked) and returns its path.
    """
    with open(osp.join(out_dir, 'train.txt')) as f:
        lines = [line.strip() for line in f if line.strip()]
    by_label: Dict[int, List[str]] = {}
    for line in lines:
        by_label.setdefault(int(line.rsplit(' ', 1)[1]), []).append(line)
    rng = np.random.default_rng([seed, len(STREAMS)])  # a stream of its own
    picked = []
    for label in sorted(by_label):
        pool = by_label[label]
        if len(pool) < shots:
            raise ValueError(f'{shots} shots per class asked, but the pool has only '
                             f'{len(pool)} {SHAPE_KINDS[label]!r} images: make the '
                             f'scenes with train_per_class >= {shots}.')
        picked += [pool[i] for i in sorted(rng.choice(len(pool), shots, replace=False))]
    path = osp.join(out_dir, f'fewshot_seed{seed}_{shots}shot.txt')
    with open(path, 'w') as f:
        f.write('\n'.join(picked) + '\n')
    return path
