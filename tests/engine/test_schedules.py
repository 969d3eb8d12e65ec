"""``FractionOfRun``: the configs' learning-rate schedules follow the run's length, so
that ``--cfg-options train_cfg.max_iters=N`` (or ``max_epochs``) shortens warm-up and
decay with it. Checked through mmengine's own ``Runner`` on a one-parameter model."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

import greenmim_mm  # noqa: F401  (registers FractionOfRun)
from greenmim_mm.engine.schedules import resolved_schedule, steps_of_fractions

REPO = osp.join(osp.dirname(__file__), '..', '..')
DEMO = osp.join(REPO, 'configs', 'pretrain',
                'greenmim_swin-demo-w4_1xb16-400it_photos-128px.py')
DETECTION_DEMO = osp.join(
    REPO, 'configs', 'detection',
    'greenmim_mask-rcnn_swin-demo-w4_fpn_1xb4-1500it_shapes-128px.py')
PRETRAIN = osp.join(REPO, 'configs', 'pretrain',
                    'greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py')


class OneWeight(BaseModel):
    """The smallest model mmengine's Runner trains: one weight, loss (w - 1)^2."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return dict(loss=(self.weight - 1).pow(2).sum())


def learning_rates(cfg: Config, tmp_path, iters_per_epoch: int = 1, **train_cfg):
    """The lr of every training iteration of ``cfg``'s optimizer and schedule, trained
    by mmengine's Runner on :class:`OneWeight` with ``train_cfg``.

    An iteration-based run gets a loader as long as the run: mmengine sleeps 2 s each
    time it restarts a finite loader."""
    iters_per_epoch = train_cfg.get('max_iters', iters_per_epoch)
    optim_wrapper = dict(optimizer=cfg.optim_wrapper.optimizer)  # the lr; no AMP
    loader = torch.utils.data.DataLoader(
        [dict(inputs=torch.zeros(1))] * iters_per_epoch, batch_size=1)
    runner = Runner(
        model=OneWeight(), work_dir=str(tmp_path), train_dataloader=loader,
        train_cfg=train_cfg, optim_wrapper=optim_wrapper,
        param_scheduler=cfg.param_scheduler, default_scope=cfg.default_scope,
        default_hooks=dict(checkpoint=None, logger=None), log_level='WARNING',
        experiment_name=f'schedule_{tmp_path.name}')
    runner.train()
    return runner.message_hub.get_scalar('train/lr').data[0].tolist()


@pytest.mark.parametrize('max_iters', [100, 400])
def test_demo_schedule_follows_max_iters(tmp_path, max_iters):
    """Warm-up over the first 10 % to the peak lr, then cosine down to eta_min at the
    end, whatever the length."""
    cfg = Config.fromfile(DEMO)
    lrs = learning_rates(cfg, tmp_path, type='IterBasedTrainLoop', max_iters=max_iters)
    peak, warmup = cfg.optim_wrapper.optimizer.lr, max_iters // 10
    assert len(lrs) == max_iters
    assert lrs[0] == pytest.approx(peak * 1e-3)
    assert lrs[warmup] == pytest.approx(peak) == max(lrs)
    assert all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup]))  # warms up
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))  # then decays
    assert lrs[-1] < 0.02 * peak  # and is near eta_min = 1e-5 at the end


def test_detection_demo_schedule_follows_max_iters(tmp_path):
    cfg = Config.fromfile(DETECTION_DEMO)
    lrs = learning_rates(cfg, tmp_path, type='IterBasedTrainLoop', max_iters=150)
    peak = cfg.optim_wrapper.optimizer.lr
    assert lrs[10] == pytest.approx(peak) == max(lrs)  # 100 of 1500 -> 10 of 150
    assert lrs[8] < peak
    assert lrs[-1] < 0.05 * peak


def test_epoch_schedule_updates_every_iteration(tmp_path):
    """The paper's pretraining schedule (5 % warm-up, cosine to 0, by epoch and
    converted to iterations), shortened to 20 epochs of 2 iterations."""
    cfg = Config.fromfile(PRETRAIN)
    lrs = learning_rates(cfg, tmp_path, iters_per_epoch=2, type='EpochBasedTrainLoop',
                         max_epochs=20)
    peak = cfg.optim_wrapper.optimizer.lr
    assert len(lrs) == 40 and lrs[2] == pytest.approx(peak) == max(lrs)
    assert lrs[0] < peak  # one warm-up epoch: 2 iterations
    assert lrs[-1] < 0.01 * max(lrs)


@pytest.mark.parametrize('path', sorted(glob.glob(osp.join(
    REPO, 'configs', '_base_', 'schedules', '*.py'))), ids=osp.basename)
def test_every_schedule_ends_with_its_run(path):
    """No schedule base keeps a scheduler that ends before or after its run."""
    cfg = Config.fromfile(path)
    by_epoch = 'max_epochs' in cfg.train_cfg
    length = cfg.train_cfg.max_epochs if by_epoch else cfg.train_cfg.max_iters
    last = [s for s in resolved_schedule(cfg) if s.get('by_epoch', True) == by_epoch][-1]
    assert last['end'] == length, (last, length)


def test_coco_milestones_follow_max_epochs():
    """mmdet's 1x steps (lr x0.1 after epochs 8 and 11 of 12) at the same points of a
    24-epoch run."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', '_base_', 'schedules',
                                   'adamw-1x_coco-instance.py'))
    assert resolved_schedule(cfg)[1]['milestones'] == [8, 11]
    cfg.train_cfg.max_epochs = 24
    assert resolved_schedule(cfg)[1]['milestones'] == [16, 22]


def test_steps_of_fractions():
    assert steps_of_fractions(400, 0.0, 0.1) == dict(begin=0, end=40)
    assert steps_of_fractions(7, 0.1, 0.2) == dict(begin=1, end=2)
    # a 4-iteration run of the detection demo: one warm-up step, cosine after it
    assert steps_of_fractions(4, 0.0, 100 / 1500) == dict(begin=0, end=1)
    assert steps_of_fractions(4, 100 / 1500, 1.0) == dict(begin=1, end=4)
    assert steps_of_fractions(24, 0.0, 1.0, milestones=[8 / 12, 11 / 12]) == dict(
        begin=0, end=24, milestones=[16, 22])
    with pytest.raises(ValueError, match='0 <= start < stop <= 1'):
        steps_of_fractions(10, 0.5, 0.5)
    with pytest.raises(ValueError, match="leave `end` out of its config"):
        steps_of_fractions(None, 0.0, 1.0)
