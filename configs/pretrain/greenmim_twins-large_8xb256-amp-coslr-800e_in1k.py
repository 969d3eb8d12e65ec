# GreenMIM Twins-L, the paper's Twins (Twins-SVT-L = ALTGVT-L), with the recipe of
# Swin-B: 224 px, mask ratio 0.75, 800 epochs on ImageNet-1k, batch 2048 = 8 GPUs x 256:
#   bash tools/dist_train.sh configs/pretrain/greenmim_twins-large_8xb256-amp-coslr-800e_in1k.py 8
_base_ = [
    '../_base_/models/greenmim_twins-large.py',
    '../_base_/datasets/imagenet_bs256_greenmim.py',
    '../_base_/schedules/greenmim_bs2048_adamw-amp-coslr-800e_in1k.py',
]

# registers greenmim_mm's modules (models, transforms, hooks) in the OpenMMLab registries
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)
