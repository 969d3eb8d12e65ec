"""A tiny Mask R-CNN (mmdet scope) trains an iteration and is evaluated with mmdet's
``CocoMetric`` through ``tools/train.py`` and ``tools/test.py``, on a shapes set that
``make_demo_coco`` (what ``tools/make_demo_coco.py`` runs) writes."""
import json
import os.path as osp
import pickle

import pytest

from greenmim_lab.data.demo_coco import make_demo_coco

CONFIG = 'tests/tools/configs/tiny_mask_rcnn.py'


@pytest.fixture(scope='module')
def coco_dir(tmp_path_factory) -> str:
    """The data, written in this process by ``make_demo_coco`` (what
    ``tools/make_demo_coco.py`` runs; a subprocess would cost an import of the whole
    stack for a few JPEGs)."""
    data_root = str(tmp_path_factory.mktemp('demo_coco'))
    make_demo_coco(data_root, num_train=4, num_val=4, size=128, seed=1)
    return data_root


@pytest.fixture(scope='module')
def trained(run_tool, coco_dir, tmp_path_factory):
    """One training iteration (batch 2), no validation: ``(result, work_dir)``."""
    work_dir = str(tmp_path_factory.mktemp('mask_rcnn_work'))
    result = run_tool(['tools/train.py', CONFIG, '--work-dir', work_dir, '--no-validate'],
                      env={'GREENMIM_DEMO_COCO': coco_dir})
    return result, work_dir


def test_make_demo_coco(coco_dir):
    for split in ('train', 'val'):
        with open(osp.join(coco_dir, 'annotations', f'instances_{split}.json')) as f:
            coco = json.load(f)
        assert len(coco['images']) == 4 and coco['annotations']
        assert [c['name'] for c in coco['categories']] == ['circle', 'square', 'triangle']
        for image in coco['images']:
            assert osp.isfile(osp.join(coco_dir, split, image['file_name']))


def test_mask_rcnn_trains_an_iteration(trained):
    result, work_dir = trained
    assert result.returncode == 0, result.describe()
    assert 'Iter(train) [1/1]' in result.output
    for loss in ('loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'):
        assert f'{loss}: ' in result.output
    assert osp.isfile(osp.join(work_dir, 'iter_1.pth'))


def test_mask_rcnn_test_reports_coco_map(run_tool, coco_dir, trained, tmp_path):
    _, work_dir = trained
    out_file = str(tmp_path / 'detections.pkl')
    result = run_tool(['tools/test.py', CONFIG, osp.join(work_dir, 'iter_1.pth'),
                       '--work-dir', str(tmp_path / 'test'), '--out', out_file],
                      env={'GREENMIM_DEMO_COCO': coco_dir})
    assert result.returncode == 0, result.describe()
    assert 'coco/bbox_mAP: ' in result.output and 'coco/segm_mAP: ' in result.output
    with open(out_file, 'rb') as f:
        detections = pickle.load(f)
    assert len(detections) == 4  # one per val image
    assert {'bboxes', 'scores', 'labels', 'masks'} <= set(detections[0]['pred_instances'])

