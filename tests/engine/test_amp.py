"""Mixed precision from the command line on the CPU (``AnyDeviceAmpOptimWrapper``), and
training steps whose loss is not finite skipped, counted and, too many in a row,
stopping the run with the checkpoints intact (``NonFiniteGuard``)."""
import math
import os.path as osp
from typing import List

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.registry import OPTIM_WRAPPERS

from greenmim_mm.errors import NonFiniteLossError
from greenmim_cli.exits import explain
from greenmim_mm.errors import EXIT_DIVERGED
from greenmim_cli.launch import prepare_train, train

TOOLS_CONFIGS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools',
                         'configs')
CLS_CFG = osp.join(TOOLS_CONFIGS, 'tiny_cls.py')
GREENMIM_CFG = osp.join(TOOLS_CONFIGS, 'tiny_greenmim.py')


def wrapper(kind: str, model: torch.nn.Module, **kwargs):
    """An optim wrapper built from its config, as the Runner builds it."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return OPTIM_WRAPPERS.build(dict(type=kind, optimizer=optimizer, **kwargs))


@pytest.mark.parametrize('dtype, loss_scale, scaled', [
    ('bfloat16', 'dynamic', False), ('float16', 'dynamic', True),
    ('bfloat16', dict(enabled=False), False),  # the paper's schedule base
    ('float16', dict(enabled=False), False), ('float16', 512., True)])
def test_amp_wrapper_autocasts_on_the_cpu(dtype, loss_scale, scaled):
    """mmengine's AmpOptimWrapper asserts a GPU; this one autocasts on the CPU and
    scales the loss for float16 only (bfloat16 has float32's range). Seeded: with
    65536 as the first scale, some draws overflow float16 and the scaler (rightly)
    skips the step."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    amp = wrapper('AnyDeviceAmpOptimWrapper', model, dtype=dtype, loss_scale=loss_scale)
    before = model.weight.detach().clone()
    with amp.optim_context(model):
        out = model(torch.randn(2, 8))
        assert out.dtype == getattr(torch, dtype)
    amp.update_params(out.float().pow(2).mean())
    assert not torch.equal(model.weight, before)  # a step was taken
    assert amp.loss_scaler.is_enabled() == scaled
    state = amp.state_dict()
    assert ('scale' in state['loss_scaler']) == scaled
    amp.load_state_dict(state)  # checkpoints round-trip


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_amp_wrapper_is_mmengines_on_a_gpu():
    from mmengine.optim import AmpOptimWrapper
    model = torch.nn.Linear(8, 4).cuda()
    amp = wrapper('AnyDeviceAmpOptimWrapper', model, dtype='float16')
    reference = AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                dtype='float16')
    assert type(amp.loss_scaler) is type(reference.loss_scaler)
    assert amp.cast_dtype == torch.float16 and amp.loss_scaler.is_enabled()


@pytest.mark.parametrize('device_type', ['cpu', 'cuda'])
def test_amp_context_is_torch_autocast_that_dynamo_traces(device_type, monkeypatch):
    """On the CPU and on CUDA the context is ``torch.autocast`` itself, never
    mmengine's ``autocast`` helper: torch 2.11's dynamo fails on that helper
    (``InternalTorchDynamoError``), which stopped every compiled GPU step. CPU proxy for
    CUDA: the wrapper is told it is on CUDA (CUDA autocast is then off without a GPU,
    which does not matter here) and the helper is made to fail."""
    import mmengine.runner.amp

    def helper(*args, **kwargs):
        raise AssertionError("mmengine's autocast helper was used")

    monkeypatch.setattr(mmengine.runner.amp, 'autocast', helper)
    model = torch.nn.Linear(8, 4)
    amp = wrapper('AnyDeviceAmpOptimWrapper', model, dtype='bfloat16')
    amp.device_type = device_type

    def step(x):
        with amp.optim_context(model):
            return model(x).float().sum()

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(step)(torch.randn(2, 8))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_nonfinite_steps_are_skipped_and_counted(monkeypatch):
    """A NaN/inf loss: no update, counted on the device; the check (at the next logging
    interval, here called by hand) warns with the count; a finite loss in between resets
    the run of skipped steps."""
    model = torch.nn.Linear(4, 1)
    guard = wrapper('SkipNonFiniteOptimWrapper', model, max_nonfinite_steps=2)
    hub = MessageHub.get_current_instance()
    warnings: List[str] = []
    monkeypatch.setattr('greenmim_mm.engine.amp.print_log',
                        lambda msg, **kwargs: warnings.append(msg))
    x = torch.randn(3, 4)
    for iteration, scale in enumerate([1.0, math.nan, 1.0, math.inf, 1.0]):
        hub.update_info('iter', iteration)
        before = model.weight.detach().clone()
        guard.update_params(model(x).pow(2).mean() * scale)
        changed = not torch.equal(model.weight, before)
        assert changed == math.isfinite(scale), iteration
        assert model.weight.grad is None or not model.weight.grad.abs().sum()
        if iteration in (1, 4):  # logging intervals
            guard.check_nonfinite()
    assert guard.skipped_steps == 2 and len(warnings) == 2
    assert warnings[0].startswith('1 step(s) skipped up to iteration 2: the loss was '
                                  'not finite (1 skipped in this run, 1 in a row')
    assert warnings[1].startswith("1 step(s) skipped up to iteration 5")
    assert '(2 skipped in this run, 0 in a row' in warnings[1]


@pytest.mark.parametrize('fused', [False, True])
def test_a_skipped_adamw_step_changes_nothing(fused):
    """The skip is exact: parameters and AdamW's state (moments, step count) are those
    of the last good step, through ``found_inf`` (fused) or ``torch.where`` (not), and
    the next good step continues as if the bad one had never been."""
    def run(losses):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=fused)
        guard = OPTIM_WRAPPERS.build(dict(type='SkipNonFiniteOptimWrapper',
                                          optimizer=optimizer))
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
        for scale in losses:
            guard.update_params(model(x).pow(2).mean() * scale)
        return model, optimizer
    with_skips, opt_skips = run([1.0, math.nan, 1.0, math.inf, 1.0])
    without, opt = run([1.0, 1.0, 1.0])
    for a, b in zip(with_skips.parameters(), without.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        for key, value in opt.state[b].items():
            torch.testing.assert_close(opt_skips.state[a][key], value, rtol=0, atol=0)


def test_a_first_step_skipped_leaves_a_fresh_optimizer():
    """State that a skipped step created (AdamW's, at its first step) is reset to zeros,
    the values it starts from."""
    model = torch.nn.Linear(4, 2)
    guard = wrapper('SkipNonFiniteOptimWrapper', model)
    guard.optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    guard.update_params(model(torch.randn(3, 4)).mean() * math.nan)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
        assert all(not v.any() for v in guard.optimizer.state[p].values())


def test_a_nonfinite_loss_on_another_process_skips_the_step_here(monkeypatch):
    """Under DDP every process takes the same decision (the flag is reduced with
    ``min`` on the device, never read): a finite loss here is skipped when another
    process's was not, else the weights would part ways."""
    import greenmim_mm.engine.amp as amp_module

    reduced = []

    def other_process_not_finite(data, op='sum', group=None):
        reduced.append(op)
        data.zero_()  # min over the processes: one of them was not finite

    monkeypatch.setattr(amp_module, 'all_reduce', other_process_not_finite)
    model = torch.nn.Linear(4, 1)
    guard = wrapper('SkipNonFiniteOptimWrapper', model)
    before = model.weight.detach().clone()
    guard.update_params(model(torch.randn(3, 4)).mean())  # finite here
    guard.check_nonfinite()
    assert reduced == ['min'] and guard.skipped_steps == 1
    assert torch.equal(model.weight, before) and model.weight.grad is None


def test_too_many_nonfinite_steps_in_a_row_stop_with_exit_code_3():
    """Decided at the check after them (the next logging interval)."""
    model = torch.nn.Linear(4, 1)
    guard = wrapper('AnyDeviceAmpOptimWrapper', model, max_nonfinite_steps=3)
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 9)
    guard.update_params(model(torch.randn(2, 4)).mean())  # iteration 10: good
    for iteration in range(3):
        hub.update_info('iter', 10 + iteration)
        guard.update_params(model(torch.randn(2, 4)).mean() * math.nan)
    hub.update_info('iter', 13)
    guard.update_params(model(torch.randn(2, 4)).mean())  # iteration 14: good again
    with pytest.raises(NonFiniteLossError,
                       match='3 steps in a row .iterations 11-13.') as e:
        guard.check_nonfinite()
    message, code = explain(e.value)
    assert code == EXIT_DIVERGED == 3 and '\n' not in message and '--resume' in message


def test_a_run_of_skips_across_checks_is_counted_whole():
    model = torch.nn.Linear(4, 1)
    guard = wrapper('SkipNonFiniteOptimWrapper', model, max_nonfinite_steps=3)
    hub = MessageHub.get_current_instance()
    for iteration in range(4):  # 1 good, then bad from iteration 2 on
        hub.update_info('iter', iteration)
        guard.update_params(model(torch.randn(2, 4)).mean() * (iteration and math.nan
                                                               or 1.0))
        if iteration == 2:
            guard.check_nonfinite()  # 2 in a row: not yet
    with pytest.raises(NonFiniteLossError, match='3 steps in a row .iterations 2-4.'):
        guard.check_nonfinite()


@pytest.mark.parametrize('scales', [(1.0, math.nan), (math.nan, 1.0)])
def test_gradient_accumulation_stays_in_step(scales):
    """With ``accumulative_counts=2`` a non-finite micro-step, first or last in its
    window, drops the whole window (no update with half a window) and the next window
    is untouched by it."""
    model = torch.nn.Linear(4, 1)
    guard = wrapper('SkipNonFiniteOptimWrapper', model, accumulative_counts=2)
    guard.initialize_count_status(model, 0, 4)
    before = model.weight.detach().clone()
    x = torch.randn(3, 4)
    for scale in scales:
        guard.update_params(model(x).mean() * scale)
    assert torch.equal(model.weight, before) and guard._inner_count == 2
    assert model.weight.grad is None or not model.weight.grad.abs().sum()
    for _ in range(2):
        guard.update_params(model(x).mean())
    assert not torch.equal(model.weight, before) and torch.isfinite(model.weight).all()


@pytest.mark.parametrize('flags, dtype', [(['--amp'], 'bfloat16'),
                                          (['--amp-dtype', 'float16'], 'float16'),
                                          ([], None)])
def test_amp_flags(flags, dtype, image_folder, monkeypatch, tmp_path):
    """``--amp`` picks bfloat16 on the CPU; ``--amp-dtype`` sets it; without them the
    config's optim wrapper runs with the non-finite guard."""
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('GREENMIM_TINY_CLS_DATA', image_folder)
    cfg = prepare_train([CLS_CFG, '--work-dir', str(tmp_path)] + flags)
    expected = 'AnyDeviceAmpOptimWrapper' if dtype else 'SkipNonFiniteOptimWrapper'
    assert cfg.optim_wrapper.type == expected
    assert cfg.optim_wrapper.get('dtype') == dtype


def test_amp_config_trains_on_the_cpu(monkeypatch, tmp_path):
    """A config with mmengine's ``AmpOptimWrapper`` (like the paper's schedule) and
    ``--amp`` both train the GreenMIM model in bfloat16 on the CPU."""
    monkeypatch.setenv('LOCAL_RANK', '0')
    train(prepare_train([GREENMIM_CFG, '--work-dir', str(tmp_path), '--cfg-options',
                         'optim_wrapper.type=AmpOptimWrapper',
                         'optim_wrapper.dtype=bfloat16', 'train_cfg.max_iters=1']))
    checkpoint = torch.load(str(tmp_path / 'iter_1.pth'), map_location='cpu',
                            weights_only=True)
    assert all(torch.isfinite(v).all() for v in checkpoint['state_dict'].values()
               if v.is_floating_point())


def test_diverging_run_stops_with_finite_checkpoints(image_folder, monkeypatch, tmp_path):
    """A loss that turns NaN at iteration 2: iterations 2 and 3 are skipped, the run
    stops there; the checkpoints (iterations 1 and 2) hold the last good weights."""
    from mmpretrain.models import ImageClassifier
    loss = ImageClassifier.loss

    def nan_from_iteration_2(self, *args, **kwargs):
        losses = loss(self, *args, **kwargs)
        if MessageHub.get_current_instance().get_info('iter') >= 1:
            losses = {k: v * math.nan for k, v in losses.items()}
        return losses

    monkeypatch.setattr(ImageClassifier, 'loss', nan_from_iteration_2)
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('GREENMIM_TINY_CLS_DATA', image_folder)
    cfg = prepare_train([CLS_CFG, '--work-dir', str(tmp_path), '--cfg-options',
                         'optim_wrapper.max_nonfinite_steps=2',
                         'default_hooks.checkpoint.interval=1'])
    with pytest.raises(NonFiniteLossError, match=r'iterations 2-3'):
        train(cfg)
    first, second = (torch.load(str(tmp_path / f'iter_{i}.pth'), map_location='cpu',
                                weights_only=True)['state_dict'] for i in (1, 2))
    assert not (tmp_path / 'iter_3.pth').exists()
    for key, value in first.items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), key
        if 'running_' not in key and 'num_batches' not in key:  # its forward ran
            assert torch.equal(value, second[key]), key  # the skipped step: no update


def _reads_in_update_params(optimizer) -> int:
    """Host reads (``aten._local_scalar_dense``) in one float16 ``update_params`` with
    dynamic loss scaling (a ``GradScaler`` on the CPU here, as on a GPU)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                Count.reads += 1
            return func(*args, **(kwargs or {}))

    weight = optimizer.param_groups[0]['params'][0]
    amp = OPTIM_WRAPPERS.build(dict(type='AnyDeviceAmpOptimWrapper', optimizer=optimizer,
                                    dtype='float16', loss_scale='dynamic'))
    assert amp.loss_scaler.is_enabled()
    loss = (weight * torch.randn(4, 4)).sum()
    with Count():
        amp.update_params(loss)
    return Count.reads


@pytest.mark.parametrize('fused, reads', [(False, 1), (True, 0)])
def test_float16_loss_scaling_reads_once_unless_fused(fused, reads):
    """float16 with dynamic loss scaling: ``GradScaler`` reads its ``found_inf`` on the
    host once per step for an optimizer that is not fused (``_maybe_opt_step``: kept,
    GradScaler's documented behaviour); a fused optimizer gets ``found_inf`` in its
    kernel and nothing is read. The guard itself reads nothing either way. (SGD: no
    host-side state of its own to read.)"""
    weight = torch.nn.Parameter(torch.randn(4, 4))
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9, fused=fused)
    assert _reads_in_update_params(optimizer) == reads


def test_the_clipped_gradient_norm_stays_on_the_device_for_the_log():
    """With ``clip_grad`` mmengine reads the norm with ``float()`` every step; here it is
    kept for the runtime-info hook, which reads it with the losses."""
    hub = MessageHub.get_instance('test_clipped_norm')  # the current one from now on
    model = torch.nn.Linear(4, 1)
    guard = wrapper('SkipNonFiniteOptimWrapper', model, clip_grad=dict(max_norm=1e-3))
    guard.update_params(model(torch.randn(3, 4)).pow(2).sum())
    scalars = guard.pop_device_scalars()
    assert list(scalars) == ['grad_norm'] and isinstance(scalars['grad_norm'], torch.Tensor)
    assert float(scalars['grad_norm']) > 1e-3  # the norm before clipping
    assert guard.pop_device_scalars() == {}
    assert guard.message_hub is hub and 'train/grad_norm' not in hub.log_scalars
