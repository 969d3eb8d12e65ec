# Swin-L (window 14, 224 px) fine-tuned on ImageNet-1k from a GreenMIM checkpoint.
# GreenMIM README: 85.1 top-1 (800 pretraining epochs, window 14).
#   bash tools/dist_train.sh configs/classification/greenmim_swin-large-w14_8xb96-coslr-100e_in1k.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN.pth
_base_ = ['./greenmim_swin-base-w7_8xb128-coslr-100e_in1k.py']

model = dict(
    backbone=dict(
        arch='large',
        window_size=14,
        # As pretrained (configs/pretrain/greenmim_swin-large-w14_*): the last stage's
        # map is 7 x 7 at 224 px, so its window is 7 (the published code shrinks the
        # window to the map), not a 14 window over zero padding with a shift
        # (pad_small_map=True), which the pretraining never computed.
        stage_cfgs=[_base_.stage_norms] * 3 + [dict(_base_.stage_norms, window_size=7)],
        drop_path_rate=0.3,  # GreenMIM's Swin-L fine-tune config
        # where configs/pretrain/greenmim_swin-large-w14_8xb256-amp-coslr-800e_in1k.py
        # writes it
        init_cfg=dict(checkpoint='work_dirs/greenmim_swin-large-w14_8xb256-amp-coslr-800e_in1k/epoch_800.pth')),
    head=dict(in_channels=192 * 2**3))  # 1536

# GreenMIM fine-tunes Swin-L with 768 images per step (16 GPUs x 48): 8 GPUs x 96 here
train_dataloader = dict(batch_size=96)
auto_scale_lr = dict(base_batch_size=768)
# GreenMIM's Swin-L config: BASE_LR 1e-3, WARMUP_LR 2e-7, MIN_LR 3.5e-7 (per 512
# images), LAYER_DECAY 0.8; the schedule of Swin-B with these ratios
optim_wrapper = dict(
    optimizer=dict(lr=1e-3 * 768 / 512),  # 1.5e-3
    paramwise_cfg=dict(layer_decay_rate=0.8))
warmup, cosine = _base_.param_scheduler  # 20 warm-up epochs, 80 cosine epochs
param_scheduler = [
    dict(warmup, scheduler=dict(warmup.scheduler, start_factor=2e-7 / 1e-3)),
    dict(cosine, scheduler=dict(cosine.scheduler, eta_min_ratio=3.5e-7 / 1e-3)),
]
