"""Synthetic scenes of textured shapes: an unlabelled pretraining set and a labelled
few-shot task from the same generator, made on the spot from a seed.

A scene is a textured background with a few small textured *distractor* shapes and one
large *main* shape drawn on top of them. Every surface (background and each shape) is
filled with its own texture -- solid, stripes, checks, dots or smooth noise -- in two
random colours, at a random scale and angle. The main shape's kind (one of
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
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

SHAPE_KINDS = ('circle', 'cross', 'ell', 'square', 'star', 'triangle')  # label order
TEXTURES = ('solid', 'stripes', 'checks', 'dots', 'noise')
STREAMS = ('unlabelled', 'train', 'test')
MAIN_RADIUS = (0.20, 0.30)  # circumradius of the main shape, fraction of the image side
DISTRACTOR_RADIUS = (0.05, 0.11)
NUM_DISTRACTORS = (2, 5)  # [low, high)
JPEG_QUALITY = 95
MANIFEST = 'scenes.json'


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


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random two-colour texture, ``(size, size, 3)`` float in [0, 255]."""
    colours = rng.uniform(0, 255, (2, 3))
    kind = TEXTURES[rng.integers(len(TEXTURES))]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)  # H, W
    angle = rng.uniform(0, math.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle)  # rotated coordinates
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    period = rng.uniform(4, 14)
    if kind == 'solid':
        weight = np.zeros((size, size))
    elif kind == 'stripes':
        weight = (u / period) % 1.0 < 0.5
    elif kind == 'checks':
        weight = (np.floor(u / period) + np.floor(v / period)) % 2 == 1
    elif kind == 'dots':
        du, dv = (u / period) % 1.0 - 0.5, (v / period) % 1.0 - 0.5
        weight = du**2 + dv**2 < 0.09
    else:  # smooth noise: bilinear upsampling of a coarse random grid
        coarse = rng.uniform(0, 1, (size // 8 + 2, size // 8 + 2))
        image = Image.fromarray((coarse * 255).astype(np.uint8))
        weight = np.asarray(image.resize((size + 16, size + 16), Image.BILINEAR),
                            dtype=np.float64)[8:8 + size, 8:8 + size] / 255.0
    weight = np.asarray(weight, dtype=np.float64)[..., None]  # H, W, 1
    return colours[0] * (1 - weight) + colours[1] * weight


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
    canvas = texture(rng, size)
    for shape in shapes:
        mask = Image.new('L', (size, size), 0)
        ImageDraw.Draw(mask).polygon([tuple(p) for p in shape.polygon()], fill=255)
        inside = np.asarray(mask, dtype=bool)[..., None]  # H, W, 1
        canvas = np.where(inside, texture(rng, size), canvas)
    return np.clip(canvas, 0, 255).round().astype(np.uint8), label


def _write_stream(out_dir: str, stream: str, num: int, size: int, seed: int,
                  labelled: bool, per_class: bool) -> List[Tuple[str, int]]:
    """Draw ``num`` scenes of one stream and write them; returns (rel. path, label).

    With ``per_class`` the stream is drawn until each kind has ``num`` scenes (the
    surplus of a kind is skipped), so the labelled sets are balanced.
    """
    rng = np.random.default_rng([seed, STREAMS.index(stream)])
    counts = [0] * len(SHAPE_KINDS)
    total = num * len(SHAPE_KINDS) if per_class else num
    items: List[Tuple[str, int]] = []
    while len(items) < total:
        pixels, label = draw_scene(rng, size)
        if per_class and counts[label] >= num:
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

    A pure function of its arguments. A manifest (``scenes.json``) records them; when
    ``out_dir`` already holds a complete set made with the same arguments, nothing is
    drawn again.

    Returns:
        The manifest: the arguments, ``classes`` and the folders.
    """
    if size < 32 or size % 32:
        raise ValueError(f'size must be a positive multiple of 32 (the mask unit), got '
                         f'{size}.')
    if min(num_unlabelled, train_per_class, test_per_class) < 1:
        raise ValueError('num_unlabelled, train_per_class and test_per_class must be '
                         f'>= 1, got {num_unlabelled}, {train_per_class}, '
                         f'{test_per_class}.')
    manifest = dict(num_unlabelled=num_unlabelled, train_per_class=train_per_class,
                    test_per_class=test_per_class, size=size, seed=seed,
                    classes=list(SHAPE_KINDS))
    manifest_path = osp.join(out_dir, MANIFEST)
    if osp.isfile(manifest_path):
        with open(manifest_path) as f:
            if json.load(f) == manifest:
                return _with_dirs(out_dir, manifest)
    if osp.isfile(manifest_path):
        os.remove(manifest_path)  # an interrupted or different set: draw it again
    _write_stream(out_dir, 'unlabelled', num_unlabelled, size, seed, False, False)
    for stream, num in (('train', train_per_class), ('test', test_per_class)):
        items = _write_stream(out_dir, stream, num, size, seed, True, True)
        _write_ann_file(osp.join(out_dir, f'{stream}.txt'), stream, items)
    with open(manifest_path, 'w') as f:  # last: marks the set complete
        json.dump(manifest, f)
    return _with_dirs(out_dir, manifest)


def _write_ann_file(path: str, prefix: str, items: Sequence[Tuple[str, int]]) -> None:
    """``<path below prefix> <label>`` lines, what ``CustomDataset(ann_file=...)`` reads."""
    with open(path, 'w') as f:
        f.writelines(f'{osp.relpath(rel_path, prefix)} {label}\n'
                     for rel_path, label in items)


def _with_dirs(out_dir: str, manifest: dict) -> Dict[str, object]:
    return dict(manifest, data_root=out_dir,
                train_ann=osp.join(out_dir, 'train.txt'),
                test_ann=osp.join(out_dir, 'test.txt'),
                **{f'{stream}_dir': osp.join(out_dir, stream) for stream in STREAMS})


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
