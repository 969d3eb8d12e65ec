# Old name of greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py (kept so that existing commands keep working).
_base_ = ['./greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py']
