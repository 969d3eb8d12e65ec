# GreenMIM Swin-T (window 7), same recipe as Swin-B.
_base_ = ['./greenmim_swin_b.py']

model = dict(
    backbone=dict(arch='tiny'),
    neck=dict(embed_dim=96 * 2**3))  # Swin-T last stage: 768
