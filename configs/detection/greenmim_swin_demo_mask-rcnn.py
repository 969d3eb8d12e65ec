# Old name of greenmim_mask-rcnn_swin-demo-w4_fpn_1xb4-1500it_shapes-128px.py (kept so that existing commands keep working).
_base_ = ['./greenmim_mask-rcnn_swin-demo-w4_fpn_1xb4-1500it_shapes-128px.py']
