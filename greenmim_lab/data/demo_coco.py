"""A tiny COCO-format instance-segmentation set of simple shapes, made on the spot.

Each image is a JPEG with a random background (a colour gradient plus noise) and one to
four shapes (circle, square, triangle) in random colours, sizes, rotations and
positions. Shapes never overlap (each one is placed outside the others' bounding
circles), so every annotation's polygon is exactly the visible object and the masks are
right without occlusion bookkeeping. A circle is drawn *as* its 32-gon, so the polygon
in the annotation is the drawn outline, not an approximation of it.

The set is a pure function of ``seed``; the train and val splits draw from separate
streams, so changing ``num_val`` does not change the training images.

Layout under ``out_dir`` (what mmdet's ``CocoDataset`` reads with
``data_prefix=dict(img='train/')``, ``ann_file='annotations/instances_train.json'``)::

    train/000000.jpg ...   val/000000.jpg ...
    annotations/instances_train.json   annotations/instances_val.json
"""
import json
import math
import os
import os.path as osp
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ('circle', 'square', 'triangle')
SPLITS = ('train', 'val')

# Polygon vertices of a unit shape centred on the origin (circumradius 1).
_UNIT_SHAPES = {
    'circle': [(math.cos(2 * math.pi * k / 32), math.sin(2 * math.pi * k / 32))
               for k in range(32)],
    'square': [(math.cos(math.pi / 4 + math.pi / 2 * k),
                math.sin(math.pi / 4 + math.pi / 2 * k)) for k in range(4)],
    'triangle': [(math.cos(-math.pi / 2 + 2 * math.pi / 3 * k),
                  math.sin(-math.pi / 2 + 2 * math.pi / 3 * k)) for k in range(3)],
}


def polygon_area(points: np.ndarray) -> float:
    """Area of a simple polygon given as ``(N, 2)`` vertices (shoelace formula)."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 image: a gradient between two colours, plus noise."""
    start, end = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = (xx * math.cos(angle) + yy * math.sin(angle))
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)  # H, W in [0, 1]
    image = start + (end - start) * t[..., None]  # H, W, 3
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _contrasting_colour(rng: np.random.Generator,
                        background: np.ndarray) -> Tuple[int, ...]:
    """A random colour far (in RGB) from the mean of the background under the shape."""
    mean = background.reshape(-1, 3).mean(0)
    candidates = rng.uniform(0, 255, (16, 3))
    best = candidates[np.linalg.norm(candidates - mean, axis=1).argmax()]
    return tuple(int(c) for c in best)


def _place_shapes(rng: np.random.Generator, size: int,
                  num: int) -> List[Tuple[str, np.ndarray]]:
    """Up to ``num`` non-overlapping shapes fully inside the image: (class, (N, 2) xy)."""
    placed: List[Tuple[float, float, float]] = []  # bounding circles: cx, cy, r
    shapes = []
    for _ in range(num):
        for _attempt in range(50):
            radius = rng.uniform(size / 10, size / 4)
            cx, cy = rng.uniform(radius + 1, size - radius - 1, 2)
            if all(math.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in placed):
                break
        else:
            continue  # no room left for this one
        name = CLASSES[rng.integers(len(CLASSES))]
        angle = rng.uniform(0, 2 * math.pi)
        rotation = np.array([[math.cos(angle), -math.sin(angle)],
                             [math.sin(angle), math.cos(angle)]])
        points = np.array(_UNIT_SHAPES[name]) @ rotation.T * radius + (cx, cy)  # N, 2
        placed.append((cx, cy, radius))
        shapes.append((name, np.round(points, 2)))
    return shapes


def _make_split(out_dir: str, split: str, num_images: int, size: int,
                seed: int) -> str:
    """Write ``num_images`` JPEGs and their COCO annotation file; return its path."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    image_dir = osp.join(out_dir, split)
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        pixels = _background(rng, size)
        canvas = Image.fromarray(pixels)
        draw = ImageDraw.Draw(canvas)
        for name, points in _place_shapes(rng, size, int(rng.integers(1, 5))):
            x0, y0 = points.min(0)
            x1, y1 = points.max(0)
            under = pixels[int(y0):int(math.ceil(y1)) + 1, int(x0):int(math.ceil(x1)) + 1]
            draw.polygon([tuple(p) for p in points],
                         fill=_contrasting_colour(rng, under))
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id,
                category_id=CLASSES.index(name) + 1,
                segmentation=[[float(v) for v in points.reshape(-1)]],
                bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                area=round(polygon_area(points), 2), iscrowd=0))
        file_name = f'{image_id - 1:06d}.jpg'
        canvas.save(osp.join(image_dir, file_name), quality=95)
        images.append(dict(id=image_id, file_name=file_name, width=size, height=size))
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(CLASSES)]
    ann_file = osp.join(out_dir, 'annotations', f'instances_{split}.json')
    os.makedirs(osp.dirname(ann_file), exist_ok=True)
    with open(ann_file, 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return ann_file


def make_demo_coco(out_dir: str, num_train: int = 40, num_val: int = 10,
                   size: int = 128, seed: int = 0) -> Dict[str, str]:
    """Write the shapes set under ``out_dir`` and return its paths.

    Args:
        out_dir: folder to write into (created if missing; existing files with the
            same names are overwritten).
        num_train: number of training images.
        num_val: number of validation images.
        size: side of the square images, in pixels (at least 32).
        seed: the set is a pure function of it.

    Returns:
        ``dict(data_root, train_img_dir, val_img_dir, train_ann, val_ann)``.
    """
    if size < 32:
        raise ValueError(f'size must be at least 32 pixels, got {size}')
    if num_train < 1 or num_val < 0:
        raise ValueError(f'image counts must be >= 1 (train) and >= 0 (val), got '
                         f'{num_train}, {num_val}')
    paths = dict(data_root=out_dir)
    for split, num in zip(SPLITS, (num_train, num_val)):
        paths[f'{split}_ann'] = _make_split(out_dir, split, num, size, seed)
        paths[f'{split}_img_dir'] = osp.join(out_dir, split)
    return paths
