"""``FractionOfRun``: the configs' learning-rate schedules follow the run's length, so
that ``--cfg-options train_cfg.max_iters=N`` (or ``max_epochs``) shortens warm-up and
decay with it. Checked through mmengine's own ``Runner`` on a one-parameter model."""
import glob
import math
import os.path as osp
from typing import Optional

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


def learning_rates(cfg: Config, tmp_path, iters_per_epoch: int = 1,
                   resume: Optional[str] = None, **train_cfg):
    """The lr of every training iteration of ``cfg``'s optimizer and schedule, trained
    by mmengine's Runner on :class:`OneWeight` with ``train_cfg`` in the work dir
    ``tmp_path``, with :class:`RunLengthHook` as ``tools/train.py`` runs it and a
    checkpoint at the end (``resume``: resumed from this checkpoint file).

    An iteration-based run gets a loader as long as the run: mmengine sleeps 2 s each
    time it restarts a finite loader."""
    iters_per_epoch = train_cfg.get('max_iters', iters_per_epoch)
    optim_wrapper = dict(optimizer=cfg.optim_wrapper.optimizer)  # the lr; no AMP
    loader = torch.utils.data.DataLoader(
        [dict(inputs=torch.zeros(1))] * iters_per_epoch, batch_size=1)
    by_epoch = train_cfg['type'] == 'EpochBasedTrainLoop'
    runner = Runner(
        model=OneWeight(), work_dir=str(tmp_path), train_dataloader=loader,
        train_cfg=train_cfg, optim_wrapper=optim_wrapper,
        param_scheduler=cfg.param_scheduler, default_scope=cfg.default_scope,
        default_hooks=dict(logger=None, checkpoint=dict(
            type='CheckpointHook', by_epoch=by_epoch, interval=1000)),
        custom_hooks=[dict(type='RunLengthHook')], resume=resume is not None,
        load_from=resume, log_level='WARNING',
        experiment_name=f'schedule_{tmp_path}')
    runner.train()
    return runner.message_hub.get_scalar('train/lr').data[0].tolist()


def warmup_then_cosine(length: int, base: float, warmup: float, start_factor: float,
                       eta_min: float, per_step: int = 1) -> list:
    """The lr of every iteration of a run of ``length`` steps (``per_step`` iterations
    each), written from the schedule's definition: a warm-up over the first
    ``warmup`` of the run (at least one step), linear from ``start_factor x base`` at
    its first iteration to ``base`` at its last, then a cosine from ``base`` towards
    ``eta_min``, which it would reach one iteration after the run."""
    w = max(1, round(warmup * length)) * per_step  # warm-up, in iterations
    n = length * per_step
    ramp = [base if w == 1 else base * (start_factor + (1 - start_factor) * k / (w - 1))
            for k in range(min(w, n))]
    cosine = [eta_min + (base - eta_min) * (1 + math.cos(math.pi * k / (n - w))) / 2
              for k in range(n - w)]
    return ramp + cosine


@pytest.mark.parametrize('length', [1, 2, 5, 10, 20, 400])
def test_any_length_warms_up_to_the_lr_then_decays(tmp_path, length):
    """A run of any length reaches the base lr at the end of its warm-up and decays over
    the rest, iteration by iteration as the closed form (the demo's 10 % warm-up by
    iteration; 10 iterations used to train at 1e-6..9.7e-6 of lr 1e-3)."""
    cfg = Config.fromfile(DEMO)
    lrs = learning_rates(cfg, tmp_path, type='IterBasedTrainLoop', max_iters=length)
    base = cfg.optim_wrapper.optimizer.lr
    expected = warmup_then_cosine(length, base, 0.1, 1e-3, 1e-5)
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-15)
    warmup = max(1, round(0.1 * length))
    assert lrs[warmup - 1] == pytest.approx(base) == max(lrs)


@pytest.mark.parametrize('length', [1, 2, 5, 10, 20, 400])
def test_any_number_of_epochs_warms_up_to_the_lr_then_decays(tmp_path, length):
    """The paper's schedule (5 % warm-up by epoch, updated every iteration, cosine to
    0) over any number of epochs: one iteration per epoch, the finest a warm-up gets."""
    cfg = Config.fromfile(PRETRAIN)
    lrs = learning_rates(cfg, tmp_path, iters_per_epoch=1, type='EpochBasedTrainLoop',
                         max_epochs=length)
    base = cfg.optim_wrapper.optimizer.lr
    assert lrs == pytest.approx(warmup_then_cosine(length, base, 40 / 800, 1e-4, 0.0),
                                rel=1e-9, abs=1e-15)


def test_epochs_of_two_iterations_follow_the_closed_form(tmp_path):
    cfg = Config.fromfile(PRETRAIN)
    lrs = learning_rates(cfg, tmp_path, iters_per_epoch=2, type='EpochBasedTrainLoop',
                         max_epochs=10)
    base = cfg.optim_wrapper.optimizer.lr
    assert lrs == pytest.approx(
        warmup_then_cosine(10, base, 40 / 800, 1e-4, 0.0, per_step=2), rel=1e-9,
        abs=1e-15)


def run_log(work_dir) -> str:
    return open(glob.glob(osp.join(work_dir, '*', '*.log'))[0]).read()


@pytest.mark.parametrize('old, new', [(10, 20), (20, 10), (20, 20)])
def test_resume_with_another_length_follows_the_new_schedule(tmp_path, old, new):
    """Train ``old`` iterations, resume with ``max_iters=new``: the resumed iterations
    run at the ``new``-iteration schedule's lr (mmengine alone kept the old schedule's
    last lr, 9.7e-6 of 1e-3, for iterations 11-20), and one line names both lengths."""
    cfg = Config.fromfile(DEMO)
    first = learning_rates(cfg, tmp_path, type='IterBasedTrainLoop', max_iters=old)
    lrs = learning_rates(cfg, tmp_path / 'resumed', resume=str(tmp_path / f'iter_{old}.pth'),
                         type='IterBasedTrainLoop', max_iters=new)
    base = cfg.optim_wrapper.optimizer.lr
    assert first == pytest.approx(warmup_then_cosine(old, base, 0.1, 1e-3, 1e-5))
    resumed = lrs[len(first):]
    expected = warmup_then_cosine(max(old, new), base, 0.1, 1e-3, 1e-5)[old:]
    if new < old:  # nothing left to train: the run ends at once
        expected = []
    assert resumed == pytest.approx(expected, rel=1e-9, abs=1e-15)
    lines = [line for line in run_log(tmp_path / 'resumed').splitlines()
             if 'schedule is rebuilt' in line]
    if old == new:
        assert lines == []
    else:
        assert len(lines) == 1 and f'resumed a run of {old} iterations as a run of ' \
            f'{new}' in lines[0], lines


def test_resume_with_more_epochs_follows_the_new_schedule(tmp_path):
    """The paper's epoch schedule (converted to iterations), 10 epochs of 2 iterations
    extended to 20 on resume."""
    cfg = Config.fromfile(PRETRAIN)
    learning_rates(cfg, tmp_path, iters_per_epoch=2, type='EpochBasedTrainLoop',
                   max_epochs=10)
    lrs = learning_rates(cfg, tmp_path / 'resumed', iters_per_epoch=2,
                         resume=str(tmp_path / 'epoch_10.pth'),
                         type='EpochBasedTrainLoop', max_epochs=20)
    base = cfg.optim_wrapper.optimizer.lr
    assert lrs[20:] == pytest.approx(warmup_then_cosine(
        20, base, 40 / 800, 1e-4, 0.0, per_step=2)[20:], rel=1e-9, abs=1e-15)
    assert 'resumed a run of 10 epochs as a run of 20' in run_log(tmp_path / 'resumed')


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


def test_the_tools_run_every_config_with_the_run_length_hook(tmp_path):
    from greenmim_cli.launch import prepare_train
    cfg = prepare_train([DEMO, '--work-dir', str(tmp_path)])
    assert [h['type'] for h in cfg.custom_hooks].count('RunLengthHook') == 1
    assert 'ReconstructionVisualizationHook' in [h['type'] for h in cfg.custom_hooks]
