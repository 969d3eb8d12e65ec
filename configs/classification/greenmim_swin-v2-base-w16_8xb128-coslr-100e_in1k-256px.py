# Swin V2-B fine-tuned on ImageNet-1k at 256 px with window 16, from the GreenMIM
# Swin V2-B pretraining at 192 px with window 12 (the path of SimMIM's Swin V2: pretrain
# at 192 px / w12, fine-tune at 256 px / w16):
#   bash tools/dist_train.sh configs/classification/greenmim_swin-v2-base-w16_8xb128-coslr-100e_in1k-256px.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN.pth
# The classifier is mmpretrain's stock Swin V2-B (SwinTransformerV2, as its
# swinv2-base-w16_in21k-pre_16xb64_in1k-256px.py): the checkpoint loads without key
# conversion; the stock class rebuilds the position-bias coordinates for window 16,
# scaled to the pretraining windows (pretrained_window_sizes). From the w16 / 256 px
# pretraining, set pretrained_window_sizes=[16, 16, 16, 8].
_base_ = [
    'mmpretrain::_base_/models/swin_transformer_v2/base_256.py',  # arch 'base', 256 px
    '../_base_/schedules/greenmim-finetune_adamw-coslr-100e_in1k.py',
]
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        window_size=[16, 16, 16, 8],  # token maps 64, 32, 16, 8
        pretrained_window_sizes=[12, 12, 12, 6],
        drop_path_rate=0.1,  # GreenMIM's Swin-B fine-tune config
        init_cfg=dict(
            type='GreenMIMPretrained',
            # where configs/pretrain/greenmim_swin-v2-base-w12_8xb256-amp-coslr-800e_in1k-192px.py
            # writes it
            checkpoint='work_dirs/greenmim_swin-v2-base-w12_8xb256-amp-coslr-800e_in1k-192px/epoch_800.pth',
            prefix='backbone.')))

# 256 px: the fine-tuning base's 224 px pipelines as mmpretrain's imagenet_bs64_swin_256
train_pipeline = [
    dict(step, scale=256) if step['type'] == 'RandomResizedCrop' else step
    for step in _base_.train_pipeline
]
test_pipeline = [
    dict(step, scale=292) if step['type'] == 'ResizeEdge'  # 256 / 224 * 256
    else dict(step, crop_size=256) if step['type'] == 'CenterCrop' else step
    for step in _base_.test_pipeline
]
# GreenMIM fine-tunes Swin-B with 1024 images per step: 8 GPUs x 128
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(
    optimizer=dict(lr=1.25e-3 * 1024 / 512),  # 2.5e-3
    # Swin V2 has no get_layer_depth: the depth of its layers, numbered as Swin's
    constructor='SwinV2LayerDecayOptimWrapperConstructor',
    # Swin V2's no-decay keywords (its q/v biases are not '.bias')
    paramwise_cfg=dict(custom_keys={
        '.logit_scale': dict(decay_mult=0.0),
        '.cpb_mlp': dict(decay_mult=0.0),
        '.q_bias': dict(decay_mult=0.0),
        '.v_bias': dict(decay_mult=0.0),
    }))
auto_scale_lr = dict(base_batch_size=1024)
