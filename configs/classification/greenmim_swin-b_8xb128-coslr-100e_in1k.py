# Old name of greenmim_swin-base-w7_8xb128-coslr-100e_in1k.py (kept so that existing commands keep working).
_base_ = ['./greenmim_swin-base-w7_8xb128-coslr-100e_in1k.py']
