# Every image under a folder (ImageFolderDataset: recursive, any common format and size,
# unreadable files skipped with a warning), with the photos demo's 128 px crops and unit
# masks, 16 per step, sampled forever. The folder: --data-root DIR (tools/train.py).
_base_ = ['./photos_bs16_greenmim-128px.py']
data_root = 'data/images/'
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ImageFolderDataset',
        data_root=data_root,
        pipeline=_base_.train_pipeline))
