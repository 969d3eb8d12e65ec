# Old name of greenmim_mask-rcnn_twins-large_fpn_1x_coco.py (kept so that existing commands keep working).
_base_ = ['./greenmim_mask-rcnn_twins-large_fpn_1x_coco.py']
