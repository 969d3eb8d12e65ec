"""``--cfg-options`` as mmengine's, but safe: the new keys mmengine would use are allowed
(e.g. ``compile``, ``optim_wrapper.dtype``, ``default_hooks.checkpoint.
max_keep_ckpts``, ``model.backbone.pad_small_map``), typos and keys nothing reads are
errors with the suggestion. (More bad keys: ``tests/tools/test_bad_input.py``.)"""
import inspect
import os.path as osp

import pytest
import torch

from greenmim_cli.cfg_options import accepted_arguments, check_option
from greenmim_mm.errors import UsageError
from greenmim_cli.launch import load_config

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SWIN_B = osp.join(REPO_ROOT,
                  'configs/pretrain/greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py')
TINY = osp.join(REPO_ROOT, 'tests/tools/configs/tiny_greenmim.py')


def test_new_keys_mmengine_uses_are_merged():
    cfg = load_config(SWIN_B, {
        'compile': True,  # read by mmengine's Runner
        'optim_wrapper.dtype': 'bfloat16',  # an argument of AmpOptimWrapper
        'default_hooks.checkpoint.max_keep_ckpts': 1,  # of CheckpointHook
        'model.backbone.pad_small_map': True,  # of mmpretrain's Swin, via **kwargs
        'train_dataloader.prefetch_factor': 4,  # of torch's DataLoader
        'randomness.deterministic': True,  # of Runner.set_randomness
    })
    assert cfg.compile is True and cfg.optim_wrapper.dtype == 'bfloat16'
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 1
    assert cfg.model.backbone.pad_small_map is True
    assert cfg.train_dataloader.collate_fn.backbone.pad_small_map is True  # bound after


def test_a_new_argument_reaches_the_module(mmpretrain_scope):
    from mmpretrain.registry import MODELS
    cfg = load_config(TINY, {'model.backbone.pad_small_map': True,
                             'model.backbone.drop_path_rate': 0.1})
    backbone = MODELS.build(cfg.model.backbone)
    assert backbone.stages[0].blocks[0].attn.pad_small_map is True  # mmpretrain's flag
    assert backbone.stages[0].blocks[1].ffn.dropout_layer.drop_prob > 0


@pytest.fixture(scope='module')
def swin_b():
    """The paper's config, parsed once (``check_option`` only reads it)."""
    from mmengine.config import Config
    return Config.fromfile(SWIN_B)


@pytest.mark.parametrize('key, value, message', [
    ('model.backbone.drop_path_rat', 0.1, 'did you mean drop_path_rate'),
    ('model.backbone.windw_size', 7, 'did you mean window_size'),
    ('model.mask_mod', 'batch', 'did you mean mask_mode'),
    ('model.neck.decoder_dept', 2, 'did you mean decoder_depth'),
    ('train_cfg.max_epoch', 2, 'did you mean max_epochs'),
    ('default_hooks.checkpoint.max_keep_ckpt', 1, 'did you mean max_keep_ckpts'),
    ('optim_wrapper.optimizer.weight_decy', 0.1, 'did you mean weight_decay'),
    ('train_dataloader.batchsize', 8, 'did you mean batch_size'),
    ('randomnes.seed', 1, 'did you mean randomness'),
    ('model.backbone.no_such_argument', 1, 'it takes arch, attn_backend'),
    ('max_epochs', 10, 'changes nothing'),  # a variable of the config file
    ('optim_wrapper.optimizer.lr', 'abc', 'expects a number'),
    ('model.backbone.type', 'GreenMIMSwinTransformr', 'did you mean GreenMIMSwin'),
])
def test_typos_and_keys_nothing_reads_are_errors(key, value, message, swin_b):
    with pytest.raises(UsageError, match=message):
        check_option(swin_b, key, value)


def test_dicts_whose_reader_is_unknown_take_any_new_key():
    """As mmengine: a dict without a known class (a detector's ``train_cfg``, ...)
    takes new keys, unless one is a close match of a key beside it."""
    from mmengine.config import Config
    cfg = Config(dict(model=dict(type='NoSuchModel', train_cfg=dict(rcnn=dict(num=1)))))
    check_option(cfg, 'model.train_cfg.rcnn.pos_fraction', 0.25)
    check_option(cfg, 'model.anything', 1)
    with pytest.raises(UsageError, match='did you mean num'):
        check_option(cfg, 'model.train_cfg.rcnn.nums', 2)


class Parent(torch.nn.Module):
    def __init__(self, depth: int = 2, width: int = 8) -> None:
        super().__init__()


class Child(Parent):
    def __init__(self, mask_unit: int = 32, **kwargs) -> None:
        super().__init__(**kwargs)


class KeepsKwargs:
    def __init__(self, size: int = 1, **kwargs) -> None:
        self.extra = kwargs


def test_accepted_arguments_follow_kwargs_to_the_parent():
    assert set(accepted_arguments(Child)) == {'mask_unit', 'depth', 'width'}
    assert accepted_arguments(Child)['depth'] == 2  # defaults: the type check
    assert set(accepted_arguments(Parent)) == {'depth', 'width'}
    assert accepted_arguments(KeepsKwargs) == {'size': 1}  # object ends the chain
    assert accepted_arguments(lambda a, **kwargs: None) is None  # open
    assert accepted_arguments(lambda a, b=2: None) == {'a': inspect.Parameter.empty,
                                                       'b': 2}


DEMO = 'configs/pretrain/greenmim_swin-demo-w4_1xb16-400it_photos-128px.py'


@pytest.fixture(scope='module')
def demo():
    from mmengine.config import Config
    return Config.fromfile(osp.join(osp.dirname(__file__), '..', '..', DEMO))


@pytest.mark.parametrize('key, value', [
    ('train_dataloader.dataset.pipeline.1.scale', (128, 96)),  # Union[Sequence, int]
    ('train_dataloader.dataset.pipeline.1.scale', [160, 160]),
    ('train_dataloader.dataset.pipeline.1.scale', 160),
    ('train_dataloader.dataset.pipeline.1.crop_ratio_range', (0.5, 1.0)),
    ('optim_wrapper.optimizer.betas', (0.9, 0.999)),
    ('model.backbone.init_cfg', None),  # defaults to None: optional
    ('default_hooks.checkpoint.max_keep_ckpts', 2),
])
def test_values_the_component_takes_are_accepted(demo, key, value):
    """Typed by the component's argument, not by the value the config has: a tuple
    where a scale may be a tuple (issue 23: '(128,96)' was 'expects a number')."""
    check_option(demo, key, value)


@pytest.mark.parametrize('key, value, message', [
    ('train_dataloader.dataset.pipeline.1.scale', 'big',
     "expects a number or a tuple or list .RandomResizedCrop's scale takes"),
    ('train_dataloader.dataset.pipeline.1.scale', None, 'expects a number or a tuple'),
    ('train_dataloader.dataset.pipeline.1.crop_ratio_range', (0.2, 'a'),
     'expects a tuple or list of numbers'),
    ('default_hooks.checkpoint.max_keep_ckpts', None, 'expects a number'),
    ('model.backbone.window_size', (4, 4), 'expects a number'),  # no annotation: as set
    ('train_dataloader.dataset.pipeline.1.scal', 128, 'did you mean scale'),
])
def test_wrong_kinds_are_refused_with_what_the_component_takes(demo, key, value,
                                                                 message):
    with pytest.raises(UsageError, match=message):
        check_option(demo, key, value)
