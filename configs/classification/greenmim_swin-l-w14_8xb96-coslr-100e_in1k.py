# Swin-L (window 14, 224 px) fine-tuned on ImageNet-1k from a GreenMIM checkpoint.
# GreenMIM README: 85.1 top-1 (800 pretraining epochs, window 14).
#   bash tools/dist_train.sh configs/classification/greenmim_swin-l-w14_8xb96-coslr-100e_in1k.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN.pth
_base_ = [
    'mmpretrain::_base_/models/swin_transformer/base_224.py',
    '../_base_/classification/greenmim_finetune_in1k.py',
]

model = dict(
    backbone=dict(
        arch='large',
        img_size=224,
        window_size=14,
        # the last stage is 7 x 7 < 14: pad it to one window (mmpretrain's SimMIM
        # Swin-L w14 fine-tune does the same)
        pad_small_map=True,
        drop_path_rate=0.3,  # GreenMIM's Swin-L fine-tune config
        init_cfg=dict(
            type='GreenMIMPretrained',
            # configs/pretrain/greenmim_swin_l_w14.py writes it here
            checkpoint='work_dirs/greenmim_swin_l_w14/epoch_800.pth',
            prefix='backbone.')),
    head=dict(in_channels=1536))  # 192 * 2**3

# GreenMIM fine-tunes Swin-L with 768 images per step (16 GPUs x 48): 8 GPUs x 96 here
train_dataloader = dict(batch_size=96)
auto_scale_lr = dict(base_batch_size=768)
# GreenMIM's Swin-L config: BASE_LR 1e-3, WARMUP_LR 2e-7, MIN_LR 3.5e-7 (per 512
# images), LAYER_DECAY 0.8
optim_wrapper = dict(
    optimizer=dict(lr=1e-3 * 768 / 512),  # 1.5e-3
    paramwise_cfg=dict(layer_decay_rate=0.8))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=2e-7 / 1e-3,
        by_epoch=True,
        begin=0,
        end=20,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=80,
        eta_min_ratio=3.5e-7 / 1e-3,
        by_epoch=True,
        begin=20,
        end=100,
        convert_to_iter_based=True)
]
