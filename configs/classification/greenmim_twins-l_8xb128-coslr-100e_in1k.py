# Old name of greenmim_twins-large_8xb128-coslr-100e_in1k.py (kept so that existing commands keep working).
_base_ = ['./greenmim_twins-large_8xb128-coslr-100e_in1k.py']
