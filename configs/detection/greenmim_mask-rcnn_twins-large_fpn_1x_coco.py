# Mask R-CNN + FPN on COCO with a GreenMIM-pretrained Twins-SVT-L, 1x schedule.
_base_ = ['../_base_/models/mask-rcnn_twins-large_fpn.py',
          '../_base_/schedules/adamw-1x_coco-instance.py']
model = dict(backbone=dict(drop_path_rate=0.2))  # a shorter schedule regularises less

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
