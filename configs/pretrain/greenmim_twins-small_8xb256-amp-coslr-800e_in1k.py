# GreenMIM Twins-S (Twins-SVT-S: dims 64/128/256/512, depths 2/2/10/4, heads
# 2/4/8/16, window 7, sr 8/4/2/1 = mmpretrain's SVT arch 'small'), the recipe of Twins-L.
_base_ = [
    '../_base_/models/greenmim_twins-large.py',
    '../_base_/datasets/imagenet_bs256_greenmim.py',
    '../_base_/schedules/greenmim_bs2048_adamw-amp-coslr-800e_in1k.py',
]

model = dict(
    backbone=dict(arch='small'),
    neck=dict(embed_dim=512))  # Twins-S last stage

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
