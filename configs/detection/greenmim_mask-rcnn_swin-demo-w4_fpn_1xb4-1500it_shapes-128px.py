# Demo: Mask R-CNN + FPN with the tiny Swin of configs/pretrain/greenmim_swin-demo-w4_1xb16-400it_photos-128px.py,
# fine-tuned on a set of shapes (circle, square, triangle, 128 px) on a CPU:
#   python tools/make_demo_coco.py data/demo_coco --num-train 200 --num-val 50
#   python tools/train.py configs/pretrain/greenmim_swin-demo-w4_1xb16-400it_photos-128px.py
#   python tools/train.py configs/detection/greenmim_mask-rcnn_swin-demo-w4_fpn_1xb4-1500it_shapes-128px.py
#   python tools/test.py configs/detection/greenmim_mask-rcnn_swin-demo-w4_fpn_1xb4-1500it_shapes-128px.py \
#       work_dirs/greenmim_mask-rcnn_swin-demo-w4_fpn_1xb4-1500it_shapes-128px/iter_1500.pth
# 1500 iterations of 4 images, ~25 min on 2 cores. Measured on the 50 val images: box AP
# 0.602 / mask AP 0.627 from the demo pretraining checkpoint, 0.68 / 0.69 from random init
# (model.backbone.init_cfg=None; tests/tools/test_end_to_end.py, pytest -m slow): 400
# iterations on 17 photographs are a demo of the pipeline, not a useful pretraining.
_base_ = ['../_base_/models/mask-rcnn_swin-demo-w4_fpn.py',
          '../_base_/schedules/adamw-1500it_shapes-instance.py']

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
