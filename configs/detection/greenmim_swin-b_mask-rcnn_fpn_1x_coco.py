# Old name of greenmim_mask-rcnn_swin-base-w7_fpn_1x_coco.py (kept so that existing commands keep working).
_base_ = ['./greenmim_mask-rcnn_swin-base-w7_fpn_1x_coco.py']
