# GreenMIM Swin V2-B, window 12 at 192 px (the resolution and window SimMIM pretrains
# Swin V2 with), GreenMIM's recipe otherwise: mask ratio 0.75 of 32 px units
# ((192 / 32)^2 = 36 units, 9 visible), 800 epochs, batch 2048 = 8 GPUs x 256:
#   bash tools/dist_train.sh configs/pretrain/greenmim_swin-v2-base-w12_8xb256-amp-coslr-800e_in1k-192px.py 8
# Fine-tune with configs/classification/greenmim_swin-v2-base-w16_8xb128-coslr-100e_in1k-256px.py.
_base_ = [
    '../_base_/models/greenmim_swin-v2-base-w12.py',
    '../_base_/datasets/imagenet_bs256_greenmim.py',
    '../_base_/schedules/greenmim_bs2048_adamw-amp-coslr-800e_in1k.py',
]
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)

img_size = 192
train_pipeline = [
    dict(step, scale=img_size) if step['type'].endswith('RandomResizedCrop') else step
    for step in _base_.train_pipeline
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.no_decay_v2))
