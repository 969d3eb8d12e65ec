# GreenMIM Swin-T (window 7), the recipe of Swin-B.
_base_ = [
    '../_base_/models/greenmim_swin-base-w7.py',
    '../_base_/datasets/imagenet_bs256_greenmim.py',
    '../_base_/schedules/greenmim_bs2048_adamw-amp-coslr-800e_in1k.py',
]

model = dict(
    backbone=dict(arch='tiny'),
    neck=dict(embed_dim=96 * 2**3))  # Swin-T last stage: 768

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
