"""GreenMIM end to end through the tools, on the CPU: demo pretraining ->
Mask R-CNN fine-tuning from its checkpoint -> ``tools/test.py`` reporting COCO box and
mask AP (mmdet's ``CocoMetric``, pycocotools) -- the README's demo commands, shortened.

The slow check (``pytest -m slow``) trains the demo detector on the shapes set until
its box AP reaches 0.5: the pipeline learns, not just runs.
"""
import contextlib
import io
import os.path as osp
import pickle
import re
import time
from typing import Dict, List

import pytest
from mmengine.config import Config

PRETRAIN = 'configs/pretrain/greenmim_swin-demo-w4_1xb16-400it_photos-128px.py'
DETECT = 'configs/detection/greenmim_mask-rcnn_swin-demo-w4_fpn_1xb4-1500it_shapes-128px.py'


def coco_map(output: str, metric: str) -> float:
    """The last ``coco/<metric>: x`` that a tool printed."""
    values = re.findall(rf'coco/{metric}: (-?[\d.]+)', output)
    assert values, f'no coco/{metric} in the output'
    return float(values[-1])


@pytest.fixture(scope='module')
def pretrain_checkpoint(run_tool, tmp_path_factory) -> str:
    """Two iterations of the demo pretraining (tools/train.py, mmpretrain scope)."""
    work_dir = str(tmp_path_factory.mktemp('greenmim_swin_demo'))
    result = run_tool(['tools/train.py', PRETRAIN, '--work-dir', work_dir,
                       '--cfg-options', 'train_cfg.max_iters=2',
                       'train_dataloader.batch_size=4'], timeout=300)
    assert result.returncode == 0, result.describe()
    checkpoint = osp.join(work_dir, 'iter_2.pth')
    assert osp.isfile(checkpoint), result.describe()
    return checkpoint


@pytest.fixture(scope='module')
def detector_checkpoint(run_tool, demo_coco, pretrain_checkpoint, tmp_path_factory):
    """Four Mask R-CNN iterations from the pretraining checkpoint, as the README says:
    ``--cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN.pth``."""
    work_dir = str(tmp_path_factory.mktemp('greenmim_swin_demo_mask-rcnn'))
    result = run_tool(
        ['tools/train.py', DETECT, '--work-dir', work_dir, '--no-validate',
         '--cfg-options', f'model.backbone.init_cfg.checkpoint={pretrain_checkpoint}',
         'train_cfg.max_iters=4', 'train_dataloader.batch_size=2'],
        timeout=300, env={'GREENMIM_DEMO_COCO': demo_coco['data_root']})
    assert result.returncode == 0, result.describe()
    # the strict initializer read the pretraining checkpoint; only the new output
    # norms of stages 0-2 were not in it
    assert re.search(r'loaded \d+ tensors from checkpoint .*iter_2\.pth', result.output)
    assert ('kept at their initial values (allowed): norm0.weight, norm0.bias, '
            'norm1.weight, norm1.bias, norm2.weight, norm2.bias') in result.output
    assert 'Iter(train) [4/4]' in result.output
    checkpoint = osp.join(work_dir, 'iter_4.pth')
    assert osp.isfile(checkpoint), result.describe()
    return checkpoint


def coco_results(detections: List[dict], cat_ids: List[int]) -> Dict[str, List[dict]]:
    """``tools/test.py --out`` detections as COCO result lists (box xywh, RLE masks)."""
    results = dict(bbox=[], segm=[])
    for image in detections:
        pred = image['pred_instances']
        for box, score, label, mask in zip(pred['bboxes'].tolist(), pred['scores'].tolist(),
                                           pred['labels'].tolist(), pred['masks']):
            common = dict(image_id=image['img_id'], score=score, category_id=cat_ids[label])
            x0, y0, x1, y1 = box
            results['bbox'].append(dict(common, bbox=[x0, y0, x1 - x0, y1 - y0]))
            counts = mask['counts']
            rle = dict(mask, counts=counts.decode() if isinstance(counts, bytes) else counts)
            results['segm'].append(dict(common, segmentation=rle))
    return results


def coco_ap(ann_file: str, results: List[dict], iou_type: str) -> float:
    """COCO mAP@[.5:.95] of ``results`` by pycocotools (mmdet's maxDets 100/300/1000)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(ann_file)
        evaluation = COCOeval(truth, truth.loadRes(results), iou_type)
        evaluation.params.maxDets = [100, 300, 1000]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0])


def test_pretrain_finetune_test(run_tool, demo_coco, detector_checkpoint, tmp_path):
    """tools/test.py reports the box and mask AP of the checkpoint's detections: the
    values equal pycocotools' AP of the detections it dumps (--out), against the
    validation annotations (not the -1 of an evaluation without ground truth)."""
    out_file = tmp_path / 'detections.pkl'
    result = run_tool(['tools/test.py', DETECT, detector_checkpoint,
                       '--work-dir', str(tmp_path), '--out', out_file],
                      timeout=300, env={'GREENMIM_DEMO_COCO': demo_coco['data_root']})
    assert result.returncode == 0, result.describe()
    with open(out_file, 'rb') as f:
        detections = pickle.load(f)
    assert len(detections) == 4 and all(len(d['pred_instances']['scores'])
                                        for d in detections)
    from pycocotools.coco import COCO
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(demo_coco['val_ann'])
    categories = truth.loadCats(truth.getCatIds())
    names = [c['name'] for c in categories]
    classes = Config.fromfile(DETECT).metainfo['classes']
    results = coco_results(detections, [categories[names.index(c)]['id'] for c in classes])
    for metric, iou_type in (('bbox_mAP', 'bbox'), ('segm_mAP', 'segm')):
        reported = coco_map(result.output, metric)
        recomputed = coco_ap(demo_coco['val_ann'], results[iou_type], iou_type)
        print(f'{metric}: reported {reported}, recomputed {recomputed:.4f}')
        assert 0.0 <= reported <= 1.0
        assert reported == pytest.approx(recomputed, abs=6e-4), metric


def test_demo_evaluator_scores_the_ground_truth_as_perfect(demo_coco, monkeypatch):
    """The evaluator tools/test.py reports with (the demo detector's test_evaluator)
    gives box and mask AP 1 to the validation ground truth given as predictions: its
    annotation file, class order and metrics are wired to the validation set (the AP
    of a 4-iteration detector above is ~0 and cannot show that)."""
    import torch
    from mmdet.registry import METRICS
    from mmengine.registry import DefaultScope
    from pycocotools.coco import COCO

    monkeypatch.setenv('GREENMIM_DEMO_COCO', demo_coco['data_root'])
    cfg = Config.fromfile(DETECT)
    classes = list(cfg.test_dataloader.dataset.metainfo['classes'])
    with DefaultScope.overwrite_default_scope('mmdet'):
        evaluator = METRICS.build(cfg.test_evaluator)
    evaluator.dataset_meta = dict(classes=classes)
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(demo_coco['val_ann'])
    label_of = {c['id']: classes.index(c['name']) for c in truth.loadCats(truth.getCatIds())}
    for image in truth.loadImgs(truth.getImgIds()):
        anns = truth.loadAnns(truth.getAnnIds(imgIds=image['id']))
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)]
        pred = dict(bboxes=torch.tensor(boxes, dtype=torch.float32),
                    scores=torch.ones(len(anns)),
                    labels=torch.tensor([label_of[a['category_id']] for a in anns]),
                    masks=torch.stack([torch.from_numpy(truth.annToMask(a)).bool()
                                       for a in anns]))
        evaluator.process({}, [dict(img_id=image['id'], pred_instances=pred,
                                    ori_shape=(image['height'], image['width']))])
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = evaluator.evaluate(len(truth.getImgIds()))
    assert metrics['coco/bbox_mAP'] == 1.0 and metrics['coco/segm_mAP'] == 1.0, metrics


def test_checkpoint_of_another_arch_fails_before_training(run_tool, demo_coco,
                                                          pretrain_checkpoint, tmp_path):
    """A 32-channel checkpoint in a 48-channel config: no training on random weights."""
    result = run_tool(
        ['tools/train.py', DETECT, '--work-dir', str(tmp_path),
         '--cfg-options', f'model.backbone.init_cfg.checkpoint={pretrain_checkpoint}',
         'model.backbone.arch.embed_dims=48'],
        timeout=300, env={'GREENMIM_DEMO_COCO': demo_coco['data_root']})
    assert result.returncode == 2, result.describe()  # an input error, in one line:
    assert result.last_error_line.startswith('error: checkpoint '), result.describe()
    assert ('patch_embed.projection.weight (32, 3, 4, 4) in checkpoint vs '
            '(48, 3, 4, 4) in model') in result.last_error_line, result.describe()
    assert 'Iter(train)' not in result.output


@pytest.mark.slow
def test_demo_detector_learns_the_shapes(run_tool, tmp_path):
    """The README's demo detection run (1500 iterations, here from random init) on 200
    training images reaches box AP >= 0.5 (COCO mAP@[.5:.95], 50 validation images).
    Measured: box AP 0.676, mask AP 0.685 in 28 minutes on 2 shared CPU cores."""
    data = tmp_path / 'demo_coco'
    made = run_tool(['tools/make_demo_coco.py', str(data),
                     '--num-train', '200', '--num-val', '50'])
    assert made.returncode == 0, made.describe()
    env = {'GREENMIM_DEMO_COCO': str(data)}
    start = time.time()
    trained = run_tool(['tools/train.py', DETECT, '--work-dir', str(tmp_path / 'work'),
                        '--no-validate', '--cfg-options', 'model.backbone.init_cfg=None'],
                       timeout=3 * 3600, env=env)
    assert trained.returncode == 0, trained.describe()
    tested = run_tool(['tools/test.py', DETECT, str(tmp_path / 'work' / 'iter_1500.pth'),
                       '--work-dir', str(tmp_path / 'test')], timeout=600, env=env)
    assert tested.returncode == 0, tested.describe()
    box_ap, mask_ap = coco_map(tested.output, 'bbox_mAP'), coco_map(tested.output,
                                                                     'segm_mAP')
    print(f'demo detector: box AP {box_ap:.3f}, mask AP {mask_ap:.3f} after '
          f'{(time.time() - start) / 60:.1f} min')
    assert box_ap >= 0.5
