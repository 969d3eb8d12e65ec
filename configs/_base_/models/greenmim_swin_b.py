# GreenMIM with a Swin-B encoder (Huang et al., NeurIPS 2022).
mask_unit = 32  # px: the encoder's total stride, patch 4 x 2 ** 3 merges
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
    backbone=dict(
        type='GreenMIMSwinTransformer',
        arch='base',
        img_size=224,
        window_size=7,
        drop_path_rate=0.0,
        out_indices=(3, ),
        mask_unit=mask_unit),
    neck=dict(
        type='GreenMIMDecoder',
        patch_size=mask_unit,  # one prediction of 32 x 32 x 3 pixels per unit
        in_chans=3,
        embed_dim=128 * 2**3,  # Swin-B last stage: 1024
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
