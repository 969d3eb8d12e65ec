# Old name of greenmim_mask-rcnn_twins-large_fpn_ms-crop-3x_coco.py (kept so that existing commands keep working).
_base_ = ['./greenmim_mask-rcnn_twins-large_fpn_ms-crop-3x_coco.py']
