# Old name of greenmim_twins-large_8xb256-amp-coslr-800e_in1k.py (kept so that existing commands keep working).
_base_ = ['./greenmim_twins-large_8xb256-amp-coslr-800e_in1k.py']
