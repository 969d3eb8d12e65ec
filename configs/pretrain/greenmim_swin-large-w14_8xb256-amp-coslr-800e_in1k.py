# GreenMIM Swin-L with 14 x 14 windows (the paper's Swin-L), the recipe of Swin-B.
_base_ = [
    '../_base_/models/greenmim_swin-base-w7.py',
    '../_base_/datasets/imagenet_bs256_greenmim.py',
    '../_base_/schedules/greenmim_bs2048_adamw-amp-coslr-800e_in1k.py',
]

model = dict(
    backbone=dict(
        arch='large',
        window_size=14,
        # 224 px: the last stage's map is 7 x 7, smaller than a 14 window. Like the
        # published code (Swin shrinks the window to the map) its window is 7, not a
        # 14 window over zero padding: with padding, the dense forward would attend to
        # the padded zeros while the visible-only forward cannot. Fine-tuning uses the
        # same stage_cfgs, so every relative-position table loads unchanged.
        stage_cfgs=[_base_.stage_norms] * 3 + [dict(_base_.stage_norms, window_size=7)]),
    neck=dict(embed_dim=192 * 2**3))  # Swin-L last stage: 1536

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
