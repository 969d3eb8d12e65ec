"""Synthetic scenes: a pure function of the seed, balanced labelled sets, disjoint
streams, few-shot splits, and the label is the large shape's outline."""
import filecmp
import json
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image, ImageDraw

from greenmim_lab.data.scenes import (SHAPE_KINDS, draw_scene,
                                         make_scene_sets, scene_layout,
                                         shape_polygon, write_fewshot_split)


@pytest.fixture(scope='module')
def scenes(tmp_path_factory) -> dict:
    return make_scene_sets(str(tmp_path_factory.mktemp('scenes')), num_unlabelled=6,
                           train_per_class=3, test_per_class=2, size=64, seed=0)


def _ann(path: str) -> list:
    with open(path) as f:
        return [line.split() for line in f if line.strip()]


def test_layout_and_balanced_labels(scenes):
    assert len(os.listdir(scenes['unlabelled_dir'])) == 6
    for split, per_class in (('train', 3), ('test', 2)):
        lines = _ann(scenes[f'{split}_ann'])
        labels = [int(label) for _, label in lines]
        assert np.bincount(labels).tolist() == [per_class] * len(SHAPE_KINDS)
        for rel_path, label in lines:
            assert rel_path.split('/')[0] == SHAPE_KINDS[int(label)]
            with Image.open(osp.join(scenes['data_root'], split, rel_path)) as image:
                assert image.size == (64, 64) and image.mode == 'RGB'


def test_a_pure_function_of_the_seed(scenes, tmp_path):
    again = make_scene_sets(str(tmp_path / 'again'), num_unlabelled=6, train_per_class=3,
                            test_per_class=2, size=64, seed=0)
    for stream in ('unlabelled', 'train', 'test'):
        compare = filecmp.dircmp(scenes[f'{stream}_dir'], again[f'{stream}_dir'])
        assert not compare.diff_files and not compare.left_only and not compare.right_only
        for sub in compare.subdirs.values():
            assert not sub.diff_files and not sub.left_only and not sub.right_only
    other = make_scene_sets(str(tmp_path / 'other'), num_unlabelled=6, train_per_class=3,
                            test_per_class=2, size=64, seed=1)
    assert not filecmp.cmp(osp.join(scenes['unlabelled_dir'], '000000.jpg'),
                           osp.join(other['unlabelled_dir'], '000000.jpg'), shallow=False)


def test_streams_are_independent():
    """Pretraining, pool and test draw from separate streams: no scene is shared."""
    first = {stream: draw_scene(np.random.default_rng([0, i]), 64)[0]
             for i, stream in enumerate(('unlabelled', 'train', 'test'))}
    assert not np.array_equal(first['unlabelled'], first['train'])
    assert not np.array_equal(first['train'], first['test'])


def test_made_once_per_stream(tmp_path):
    """A complete stream made with the same arguments is kept; a changed one is drawn
    again, without stale files, and leaves the other streams alone."""
    def mtime(path: str) -> int:
        return os.stat(path).st_mtime_ns

    first = make_scene_sets(str(tmp_path), num_unlabelled=6, train_per_class=3,
                            test_per_class=2, size=64, seed=0)
    unlabelled = osp.join(first['unlabelled_dir'], '000000.jpg')
    test_file = osp.join(first['test_dir'], SHAPE_KINDS[0], '000000.jpg')
    before = mtime(unlabelled), mtime(test_file)
    assert make_scene_sets(str(tmp_path), num_unlabelled=6, train_per_class=3,
                           test_per_class=2, size=64, seed=0) == first
    assert (mtime(unlabelled), mtime(test_file)) == before
    make_scene_sets(str(tmp_path), num_unlabelled=4, train_per_class=3,
                    test_per_class=2, size=64, seed=0)
    assert sorted(os.listdir(first['unlabelled_dir'])) == [f'00000{i}.jpg'
                                                           for i in range(4)]
    assert mtime(test_file) == before[1]
    with open(tmp_path / 'unlabelled.json') as f:
        assert json.load(f)['num'] == 4


def test_fewshot_splits(scenes):
    pool = {line[0] for line in _ann(scenes['train_ann'])}
    splits = [_ann(write_fewshot_split(scenes['data_root'], 2, seed)) for seed in range(3)]
    for lines in splits:
        assert np.bincount([int(label) for _, label in lines]).tolist() == [2] * 6
        assert {path for path, _ in lines} <= pool
    assert splits[0] != splits[1]  # each seed draws its own shots
    assert _ann(write_fewshot_split(scenes['data_root'], 2, 0)) == splits[0]
    with pytest.raises(ValueError, match='train_per_class >= 4'):
        write_fewshot_split(scenes['data_root'], 4, 0)


def test_label_is_the_large_shape():
    """The label is the kind of the last shape drawn (nothing covers it), which is
    larger than every distractor and lies fully inside the image."""
    for seed in range(50):
        shapes, label = scene_layout(np.random.default_rng(seed), 128)
        main, distractors = shapes[-1], shapes[:-1]
        assert main.kind == SHAPE_KINDS[label]
        assert 2 <= len(distractors) <= 4
        assert all(main.radius > shape.radius for shape in distractors)
        points = main.polygon()
        assert points.min() >= 0 and points.max() <= 128
    for kind in SHAPE_KINDS:  # every outline fits its circumcircle, with a real area
        points = shape_polygon(kind, (0.0, 0.0), 1.0, 0.7)
        assert np.linalg.norm(points, axis=1).max() <= 1.0 + 1e-9
        mask = Image.new('L', (64, 64), 0)
        ImageDraw.Draw(mask).polygon([tuple(p) for p in points * 30 + 32], fill=255)
        assert np.asarray(mask).astype(bool).mean() > 0.1


def test_drawn_from_the_layout():
    """The scene's main shape is drawn where its layout says and covered by nothing:
    inside its polygon every pixel mixes the same two colours (one texture), so the
    colours lie on one line in RGB space."""
    for seed in range(20):
        image, label = draw_scene(np.random.default_rng(seed), 128)
        shapes, label_again = scene_layout(np.random.default_rng(seed), 128)
        assert label == label_again
        mask = Image.new('L', (128, 128), 0)
        ImageDraw.Draw(mask).polygon([tuple(p) for p in shapes[-1].polygon()], fill=255)
        inside = np.asarray(mask).astype(bool)
        assert inside.sum() > 0.04 * 128 * 128
        pixels = image[inside].astype(np.float64)  # N, 3
        singular = np.linalg.svd(pixels - pixels.mean(0), compute_uv=False)
        assert singular[1] / np.sqrt(len(pixels)) < 1.0  # off the line: uint8 rounding


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='multiple of 32'):
        make_scene_sets(str(tmp_path), size=100)
    with pytest.raises(ValueError, match='must be >= 1'):
        make_scene_sets(str(tmp_path), num_unlabelled=0)
    with pytest.raises(ValueError, match='Unknown shape kind'):
        shape_polygon('hexagon', (0, 0), 1, 0)
