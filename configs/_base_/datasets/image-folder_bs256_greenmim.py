# Every image under a folder (ImageFolderDataset: recursive, any common format and size,
# unreadable files skipped with a warning), with the ImageNet recipe's 224 px crops and
# unit masks, 256 per GPU. The folder: --data-root DIR (tools/train.py). The last,
# smaller batch of an epoch is kept (drop_last=False): a folder smaller than a batch
# still trains.
_base_ = ['./imagenet_bs256_greenmim.py']
data_root = 'data/images/'
train_dataloader = dict(
    drop_last=False,
    dataset=dict(
        _delete_=True,
        type='ImageFolderDataset',
        data_root=data_root,
        pipeline=_base_.train_pipeline))
