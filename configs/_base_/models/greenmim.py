# GreenMIM (Huang et al., NeurIPS 2022) without its encoder: the unit masks' data
# preprocessor, the one-block MAE-style decoder at mask-unit resolution and the loss on
# normalised pixels of the masked units. greenmim_swin-base-w7.py and
# greenmim_twins-large.py add the encoder (and the decoder's input width).
mask_unit = 32  # px: the encoders' total stride, patch 4 x 2 ** 3 downsamplings
model = dict(
    type='GreenMIM',
    mask_mode='sample',  # 'batch': one mask per batch, as the published code
    # GreenMIMDataPreprocessor = SelfSupDataPreprocessor that keeps the unit masks on
    # the CPU, where the backbone plans its window groups (no device sync).
    data_preprocessor=dict(
        type='GreenMIMDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    neck=dict(
        type='GreenMIMDecoder',
        patch_size=mask_unit,  # one prediction of 32 x 32 x 3 pixels per unit
        in_chans=3,
        decoder_embed_dim=512,
        decoder_depth=1,
        decoder_num_heads=16,
        mlp_ratio=4.),
    head=dict(
        type='MAEPretrainHead',
        norm_pix=True,
        patch_size=mask_unit,
        loss=dict(type='PixelReconstructionLoss', criterion='L2')),
    init_cfg=[
        dict(type='Xavier', layer='Linear', distribution='uniform'),
        dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
    ])
