"""The learning-signal experiment: its configs differ where they should and only
there, its summary line has one fixed form, and the whole command runs end to end
(a tiny budget here; the full experiment is ``pytest -m slow``)."""
import importlib.util
import json
import os.path as osp
import re

import pytest

from greenmim_lab.experiments.learning_signal_configs import (DEMO_CONFIG,
                                                             finetune_config,
                                                             load_demo_config,
                                                             pretrain_config)
from greenmim_lab.experiments.learning_signal_report import (mean_std, results_table,
                                                            summary_line)

TOOL = 'tools/learning_signal.py'
from greenmim_lab import REPO_ROOT
ARM = r'{}=(?P<{}>[01]\.\d{{3}})\+-(?P<{}_std>\d\.\d{{3}})'
LINE = re.compile(r'^learning signal \(top-1, (?P<seeds>\d+) seeds?\): '
                  + ' '.join(ARM.format(arm, arm, arm)
                             for arm in ('greenmim', 'simmim', 'random')) + '$')


def test_summary_line_form():
    line = summary_line({'greenmim': [0.8, 0.82, 0.816], 'simmim': [0.79, 0.79, 0.79],
                         'random': [0.6, 0.7, 0.65]})
    assert line == ('learning signal (top-1, 3 seeds): greenmim=0.812+-0.011 '
                    'simmim=0.790+-0.000 random=0.650+-0.050')
    assert LINE.match(line)
    assert mean_std([0.5]) == (0.5, 0.0)


def test_results_table_pairs_seeds_with_random():
    curve = [dict(loss=0.5)] * 60
    table = results_table(
        {'greenmim': [0.3, 0.5], 'random': [0.2, 0.6]},
        {'greenmim': dict(steps=10, images=160, cpu_s=60.2, wall_s=70.0, curve=curve)})
    rows = table.splitlines()
    assert rows[2] == ('| GreenMIM | 10 | 160 | 60 | 70 | 0.500 | **0.400 +- 0.141** | '
                       '0.300 0.500 | +0.000 +- 0.141 (1/2 ahead) |')
    assert rows[3].endswith('| 0.200 0.600 | - |')


def _without(cfg: dict, *paths: str) -> dict:
    """A deep copy of ``cfg`` without the dotted ``paths``."""
    cfg = json.loads(json.dumps(cfg))
    for path in paths:
        node = cfg
        *parents, last = path.split('.')
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[int(last) if isinstance(node, list) else last]
    return cfg


def test_pretrain_configs_differ_in_the_method_only(tmp_path):
    demo = load_demo_config()
    green = pretrain_config('greenmim', str(tmp_path), str(tmp_path), 60.0).to_dict()
    sim = pretrain_config('simmim', str(tmp_path), str(tmp_path), 60.0).to_dict()
    assert green['model'] == demo.to_dict()['model']  # the demo's GreenMIM as it is
    model = sim['model']
    assert (model['type'], model['backbone']['type'], model['neck']['type'],
            model['head']['type']) == ('SimMIM', 'SimMIMSwinTransformer',
                                       'SimMIMLinearDecoder', 'SimMIMHead')
    assert model['backbone']['arch'] == demo.model.backbone.arch.to_dict()
    assert model['backbone']['img_size'] == 128
    assert model['backbone']['stage_cfgs'] == dict(block_cfgs=dict(window_size=4))
    assert model['neck']['in_channels'] == 256 and model['head']['patch_size'] == 4
    assert model['head']['loss']['criterion'] == 'L1'  # mmpretrain's stock SimMIM
    mask_steps = [i for i, step in enumerate(sim['train_pipeline']) if 'Mask' in step['type']]
    masker = sim['train_pipeline'][mask_steps[0]]
    assert masker == dict(type='SimMIMMaskGenerator', input_size=128, mask_patch_size=32,
                          model_patch_size=4, mask_ratio=0.6)
    # everything else -- data, augmentation, optimiser, budget, hooks -- is shared
    loader = f'train_dataloader.dataset.pipeline.{mask_steps[0]}'
    drop = ('model', f'train_pipeline.{mask_steps[0]}', loader,
            'train_dataloader.collate_fn')
    assert _without(green, *drop) == _without(sim, *drop)
    # each arm batches as its own configs do: GreenMIM plans in the collate
    assert green['train_dataloader']['collate_fn'] == dict(
        type='greenmim_collate', backbone=demo.to_dict()['model']['backbone'])
    assert sim['train_dataloader']['collate_fn'] == dict(type='default_collate')
    assert green['param_scheduler'] is None
    assert green['custom_hooks'] == [dict(
        type='CPUTimeBudgetHook', budget_s=60.0, warmup_ratio=0.1, start_factor=1e-3,
        min_lr_ratio=0.01)]  # the demo's 40/400 warm-up, eta_min 1e-5 of lr 1e-3


def test_finetune_recipe_is_shared(tmp_path):
    args = (str(tmp_path), 'fewshot.txt', str(tmp_path))
    random = finetune_config(*args, None, ['a', 'b'], iters=10, seed=0).to_dict()
    pretrained = finetune_config(*args, 'ckpt.pth', ['a', 'b'], iters=10, seed=0).to_dict()
    assert random['model']['backbone']['init_cfg'] is None
    assert pretrained['model']['backbone']['init_cfg'] == dict(
        type='GreenMIMPretrained', checkpoint='ckpt.pth', prefix='backbone.',
        allowed_unexpected=['^mask_token$'])
    path = 'model.backbone.init_cfg'
    assert _without(random, path) == _without(pretrained, path)
    assert random['model']['backbone']['arch'] == load_demo_config(
        DEMO_CONFIG).model.backbone.arch.to_dict()


def _check_run(result, out_dir: str, seeds: int) -> dict:
    assert result.returncode == 0, result.describe()
    last = result.stdout.strip().splitlines()[-1]
    match = LINE.match(last)
    assert match, f'last line has the wrong form: {last!r}'
    assert int(match['seeds']) == seeds
    for name in ('results.json', 'results.md', 'loss_curves.png', 'accuracy.png',
                 'reconstructions.png'):
        assert osp.getsize(osp.join(out_dir, name)) > 0, name
    with open(osp.join(out_dir, 'results.json')) as f:
        results = json.load(f)
    assert results['line'] == last
    for method in ('greenmim', 'simmim'):
        cost = results['pretraining'][method]
        assert cost['steps'] >= 1 and cost['images'] == 16 * cost['steps']
        assert cost['cpu_s'] >= cost['budget_s']
        assert osp.isfile(cost['checkpoint'])
    probes = results['probes']  # one per pretrained arm, one per seed of random weights
    assert {arm: len(runs) for arm, runs in probes.items()} == dict(
        greenmim=1, simmim=1, random=seeds)
    assert all(len(run['knn']) == len(run['linear']) == 4
               for runs in probes.values() for run in runs)
    return results


def test_quick_run_end_to_end(run_tool, tmp_path):
    """``--quick``: 2 CPU s of pretraining each, 2 fine-tuning steps, one seed."""
    out_dir = str(tmp_path / 'out')
    result = run_tool([TOOL, '--quick', '--out-dir', out_dir], timeout=180)
    _check_run(result, out_dir, seeds=1)
    assert 'loaded 127 tensors from checkpoint' in open(osp.join(
        out_dir, 'finetune', 'simmim_seed0', 'run.log')).read()


def test_bad_option(tmp_path, capsys):
    """Checked before anything is made: one line naming the problem."""
    spec = importlib.util.spec_from_file_location('learning_signal_tool',
                                                  osp.join(REPO_ROOT, TOOL))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--quick', '--shots', '5', '--out-dir', str(tmp_path / 'out')])
    assert exit_info.value.code == ('error: shots (5) cannot exceed train_per_class '
                                    '(2), the pool they are drawn from.')
    assert not osp.exists(tmp_path / 'out')


@pytest.mark.slow
def test_full_experiment(run_tool, tmp_path):
    """The documented experiment (docs/learning_signal.md), about 50 minutes, and its
    documented result: GreenMIM ahead of random weights by more than the seed spread
    of either, and ahead of SimMIM."""
    out_dir = str(tmp_path / 'out')
    result = run_tool([TOOL, '--out-dir', out_dir], timeout=4 * 3600)
    results = _check_run(result, out_dir, seeds=5)
    accuracies = results['accuracies']
    (green, green_std), (sim, _), (random, random_std) = (
        mean_std(accuracies[arm]) for arm in ('greenmim', 'simmim', 'random'))
    assert green - random > max(green_std, random_std), results['line']
    assert green >= sim, results['line']


def test_reuse_only_a_finished_run_of_the_same_config(tmp_path):
    from greenmim_lab.experiments.jobs import RunnerJob
    from greenmim_lab.experiments.learning_signal import _finished_with

    job = RunnerJob('pretrain_greenmim', str(tmp_path / 'cfg.py'), str(tmp_path))
    assert not _finished_with(job, 'a = 1\n')  # nothing ran
    (tmp_path / 'cfg.py').write_text('a = 1\n')
    checkpoint = tmp_path / 'budget_end.pth'
    (tmp_path / 'cpu_budget.json').write_text(json.dumps(dict(checkpoint=str(checkpoint))))
    assert not _finished_with(job, 'a = 1\n')  # no checkpoint
    checkpoint.write_bytes(b'')
    assert _finished_with(job, 'a = 1\n')
    assert not _finished_with(job, 'a = 2\n')  # another config
