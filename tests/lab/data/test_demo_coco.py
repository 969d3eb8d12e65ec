"""The shapes set of ``tools/make_demo_coco.py``: valid COCO that mmdet reads, masks
that match the drawn pixels, deterministic in the seed."""
import filecmp
import json
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from greenmim_lab.data.demo_coco import CLASSES, make_demo_coco, polygon_area


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def test_layout_and_annotations(demo_coco):
    for split, num in (('train', 8), ('val', 4)):
        coco = _load(demo_coco[f'{split}_ann'])
        assert [c['name'] for c in coco['categories']] == list(CLASSES)
        assert [image['id'] for image in coco['images']] == list(range(1, num + 1))
        per_image = np.bincount([a['image_id'] for a in coco['annotations']])[1:]
        assert len(per_image) == num and per_image.min() >= 1 and per_image.max() <= 4
        for image in coco['images']:
            with Image.open(osp.join(demo_coco[f'{split}_img_dir'],
                                     image['file_name'])) as file:
                assert file.format == 'JPEG' and file.size == (128, 128)
        for ann in coco['annotations']:
            points = np.array(ann['segmentation'][0]).reshape(-1, 2)
            x, y, w, h = ann['bbox']
            assert np.allclose([x, y, x + w, y + h],
                               [*points.min(0), *points.max(0)], atol=0.01)
            assert 0 <= x and x + w <= 128 and 0 <= y and y + h <= 128
            assert ann['area'] == pytest.approx(polygon_area(points), abs=0.01)
            assert ann['iscrowd'] == 0 and ann['category_id'] in (1, 2, 3)


def test_masks_match_the_pixels(demo_coco):
    """Masks are disjoint, and each covers one flat colour: the drawn shape."""
    from pycocotools.coco import COCO
    from scipy.ndimage import binary_erosion

    coco = COCO(demo_coco['train_ann'])
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        pixels = np.asarray(Image.open(osp.join(demo_coco['train_img_dir'],
                                                info['file_name'])), dtype=float)
        covered = np.zeros(pixels.shape[:2], int)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            mask = coco.annToMask(ann).astype(bool)
            covered += mask
            inside = pixels[binary_erosion(mask, iterations=2)]  # off the JPEG edges
            outside = binary_erosion(~mask, iterations=2)
            ring = pixels[outside & ~binary_erosion(~mask, iterations=5)]  # 2-5 px out
            assert inside.std(0).max() < 8  # one fill colour (plus JPEG noise)
            assert np.abs(inside.mean(0) - ring.mean(0)).max() > 20  # not background
        assert covered.max() == 1  # no overlaps: masks need no occlusion handling


def test_deterministic_in_the_seed(demo_coco, tmp_path):
    again = make_demo_coco(str(tmp_path / 'again'), num_train=8, num_val=2, seed=0)
    assert _load(again['train_ann']) == _load(demo_coco['train_ann'])
    assert filecmp.cmp(osp.join(again['train_img_dir'], '000003.jpg'),
                       osp.join(demo_coco['train_img_dir'], '000003.jpg'), shallow=False)
    # fewer val images: the same first ones; another seed: another set
    assert _load(again['val_ann'])['annotations'] == [
        a for a in _load(demo_coco['val_ann'])['annotations'] if a['image_id'] <= 2]
    other = make_demo_coco(str(tmp_path / 'other'), num_train=8, num_val=0, seed=1)
    assert _load(other['train_ann']) != _load(demo_coco['train_ann'])


def test_mmdet_coco_dataset_reads_it(demo_coco):
    from mmdet.datasets import CocoDataset
    from mmengine.registry import init_default_scope

    init_default_scope('mmdet')
    dataset = CocoDataset(
        data_root=demo_coco['data_root'], ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'), metainfo=dict(classes=CLASSES),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True, with_mask=True)])
    assert len(dataset) == 4
    sample = dataset[0]
    assert sample['img'].shape == (128, 128, 3)
    assert len(sample['gt_bboxes']) == len(sample['gt_masks']) >= 1
    masks = sample['gt_masks'].to_ndarray()  # N, H, W
    boxes = sample['gt_bboxes'].tensor.numpy()  # N, 4 (x1, y1, x2, y2)
    for mask, box in zip(masks, boxes):
        rows, cols = np.nonzero(mask)
        assert np.allclose([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1],
                           box, atol=1.5)


def test_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match='^size must be at least 32 pixels, got 16$'):
        make_demo_coco(str(tmp_path), size=16)
    with pytest.raises(ValueError, match='>= 0'):
        make_demo_coco(str(tmp_path), num_val=-1)
    with pytest.raises(ValueError, match='>= 1 .train.'):
        make_demo_coco(str(tmp_path), num_train=0)  # nothing to train on
    assert not any(tmp_path.iterdir())  # nothing written
