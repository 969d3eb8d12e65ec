"""GreenMIM under 2-process gloo DDP through ``tools/dist_train.sh``, and resumed
(``--resume``): the
masks stay on the CPU in every process, the synchronised gradient of a step is the
one-process gradient on the union of the processes' batches, and ``--resume``
restores the saved weights and optimizer state tensor for tensor.

One shared run (the ``greenmim_ddp_run`` fixture); what each process saw is recorded
by ``tests/tools/ddp_probe.py``.
"""
import os.path as osp
from typing import Dict

import pytest
import torch
from helpers import run_log
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS

import greenmim_mm  # noqa: F401  (registers the model)

RANKS = (0, 1)


def load(work_dir: str, name: str) -> dict:
    """A checkpoint or probe file (they pickle data samples: not weights_only)."""
    return torch.load(osp.join(work_dir, name), map_location='cpu', weights_only=False)


@pytest.fixture(scope='module')
def run(greenmim_ddp_run) -> Dict[str, object]:
    result = greenmim_ddp_run['train']
    assert result.returncode == 0, result.describe()
    assert 'x 2 processes on cpu' in result.output  # the header's data line
    assert 'Distributed training: True' in run_log(greenmim_ddp_run['work_dir'])
    assert 'Iter(train) [2/2]' in result.output
    print(f"DDP run + resume: {greenmim_ddp_run['seconds']:.1f} s")
    return greenmim_ddp_run


def test_masks_stay_on_the_cpu_in_every_process(run):
    """Each process draws its own masks; the loader plans them (the batch has a plan),
    the backbone gets that plan, and the data samples' masks are never handed to the
    data preprocessor's move to the training device."""
    masks = []
    for rank in RANKS:
        probe = load(run['work_dir'], f'probe/iter0_rank{rank}.pth')
        assert not probe['masks_cast'], f'rank {rank} moved the masks to the device'
        assert 'plan' in probe['batch'], f'rank {rank}: the loader made no plan'
        (reached, ) = probe['backbone_masks']  # one forward in the first iteration
        assert reached.device.type == 'cpu' and reached.dtype == torch.bool
        drawn = torch.stack([sample.mask for sample in probe['batch']['data_samples']])
        assert torch.equal(reached, drawn)
        masks.append(drawn)
    assert not torch.equal(*masks), 'both processes drew the same masks'


def test_gradient_equals_one_process_on_the_union(run):
    """SGD with momentum stores the first step's (all-reduced) gradient as its
    momentum buffer: it equals the gradient of one process on both batches."""
    work_dir = run['work_dir']
    starts = [load(work_dir, f'probe/start_iter0_rank{rank}.pth') for rank in RANKS]
    for name, value in starts[0]['state_dict'].items():  # DDP broadcast rank 0's
        assert torch.equal(value, starts[1]['state_dict'][name]), name
    batches = [load(work_dir, f'probe/iter0_rank{rank}.pth')['batch'] for rank in RANKS]
    union = dict(inputs=torch.cat([batch['inputs'] for batch in batches]),
                 data_samples=[s for batch in batches for s in batch['data_samples']])

    cfg = Config.fromfile(run['config'])
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.load_state_dict(starts[0]['state_dict'])
    data = model.data_preprocessor(union, True)
    model.loss(data['inputs'], data['data_samples'])['loss'].backward()

    step = load(work_dir, 'iter_1.pth')
    lr = step['optimizer']['param_groups'][0]['lr']
    names = [name for name, param in model.named_parameters() if param.requires_grad]
    assert len(step['optimizer']['state']) == len(names)
    params = dict(model.named_parameters())
    for index, name in enumerate(names):
        gradient = params[name].grad
        synced = step['optimizer']['state'][index]['momentum_buffer']
        scale = max(float(gradient.abs().max()), 1e-3)
        torch.testing.assert_close(synced, gradient, rtol=1e-4, atol=1e-5 * scale,
                                   msg=lambda m: f'gradient of {name}: {m}')
        torch.testing.assert_close(step['state_dict'][name],
                                   starts[0]['state_dict'][name] - lr * synced,
                                   msg=lambda m: f'step of {name}: {m}')


def test_resume_restores_weights_and_optimizer(run):
    assert run['resumed']
    saved = load(run['work_dir'], 'iter_2.pth')
    resumed = load(run['work_dir'], 'probe/start_iter2_rank0.pth')
    assert resumed['state_dict'].keys() == saved['state_dict'].keys()
    for name, value in saved['state_dict'].items():
        assert torch.equal(resumed['state_dict'][name], value), name
    optimizer, saved_optimizer = resumed['optimizer'], saved['optimizer']
    assert optimizer['param_groups'] == saved_optimizer['param_groups']
    assert optimizer['state'].keys() == saved_optimizer['state'].keys()
    for index, state in saved_optimizer['state'].items():
        assert torch.equal(optimizer['state'][index]['momentum_buffer'],
                           state['momentum_buffer']), index
    # and training went on from there, for one iteration
    assert load(run['work_dir'], 'probe/iter2_rank0.pth')['batch']['inputs'].shape[0] == 2
    assert load(run['work_dir'], 'iter_3.pth')['meta']['iter'] == 3
