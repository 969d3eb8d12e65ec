# Mask R-CNN + FPN on COCO with a GreenMIM-pretrained Twins-SVT-L, 3x multi-scale crops.
_base_ = ['../_base_/models/mask-rcnn_twins-large_fpn.py',
          '../_base_/schedules/adamw-ms-crop-3x_coco-instance.py']

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
