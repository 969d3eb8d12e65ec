# GreenMIM Swin-L with 14 x 14 windows (the paper's Swin-L), same recipe as Swin-B.
_base_ = ['./greenmim_swin_b.py']

model = dict(
    backbone=dict(
        arch='large',
        window_size=14,
        # 224 px: the last stage is 7 x 7 < 14, padded to one window (as the
        # fine-tuning config and mmpretrain's SimMIM Swin-L), so the same
        # relative-position tables are used in both
        pad_small_map=True),
    neck=dict(embed_dim=192 * 2**3))  # Swin-L last stage: 1536
