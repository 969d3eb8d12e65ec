# Old name of greenmim_swin-large-w14_8xb96-coslr-100e_in1k.py (kept so that existing commands keep working).
_base_ = ['./greenmim_swin-large-w14_8xb96-coslr-100e_in1k.py']
