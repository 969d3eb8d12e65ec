# Mask R-CNN + FPN on COCO with a GreenMIM-pretrained Swin-B (window 7), 3x multi-scale
# crops: the paper's COCO setting (800-epoch pretraining: 50.0 box AP, 44.1 mask AP).
_base_ = ['../_base_/models/mask-rcnn_swin-base-w7_fpn.py',
          '../_base_/schedules/adamw-ms-crop-3x_coco-instance.py']

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
