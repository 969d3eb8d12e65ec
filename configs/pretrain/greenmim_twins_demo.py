# Old name of greenmim_twins-demo-w4_1xb16-400it_photos-128px.py (kept so that existing commands keep working).
_base_ = ['./greenmim_twins-demo-w4_1xb16-400it_photos-128px.py']
