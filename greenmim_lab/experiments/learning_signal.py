"""Does GreenMIM pretraining teach something that transfers? GreenMIM vs SimMIM vs
random initialisation, at equal pretraining compute, on the CPU.

1. **Data** (:mod:`greenmim_lab.data.scenes`): unlabelled synthetic scenes of
   textured shapes to pretrain on, and a few-shot task from the same generator --
   name the kind of the large shape in a scene (6 classes) from ``shots`` labelled
   scenes per class -- with a held-out test set. All from one seed, no download.
2. **Pretraining, side by side**: the demo's tiny Swin with GreenMIM and with
   mmpretrain's stock SimMIM (:mod:`.learning_signal_configs`), the two runs at the
   same time in two single-thread processes, each for the same budget of *CPU
   seconds* (``CPUTimeBudgetHook``). A wall-clock budget on a shared machine favours
   whichever run meets a quieter moment; the CPU time of a one-thread process counts
   the work it did (its forward, backward, update and data loading) and barely
   depends on the neighbours. Steps, images, CPU and wall seconds of each are kept.
3. **Fine-tuning**: each checkpoint and a random initialisation, the same recipe, on
   ``seeds`` few-shot splits (seed k draws its own shots and its own training
   randomness), top-1 accuracy on the test set. Fine-tuning, not a linear probe:
   masked-image-modeling features are known to be weak under linear probes and are
   meant to be fine-tuned (the paper evaluates by fine-tuning only).
4. **Frozen-feature probes** (:mod:`.feature_probe`), a diagnostic: k-NN and linear
   probes of each arm's frozen encoder, per stage, on the whole labelled pool -- what
   the pretraining put in the features, before fine-tuning can wash it out.

Everything goes through mmengine's ``Runner`` with configs written next to the
results (:mod:`.jobs`). The last line printed is machine-readable::

    learning signal (top-1, 5 seeds): greenmim=0.812+-0.010 simmim=0.790+-0.012 random=0.640+-0.020
"""
import json
import os
import os.path as osp
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

from greenmim_lab.data.scenes import SHAPE_KINDS, make_scene_sets, write_fewshot_split
from .feature_probe import ProbeResult, probe, probe_table, read_split
from .jobs import RunnerJob, run_jobs
from .learning_signal_configs import (DEMO_CONFIG, METHODS, finetune_config,
                                      load_demo_config, pretrain_config)
from .learning_signal_report import (plot_accuracies, plot_loss_curves,
                                     reconstruction_picture, results_table,
                                     summary_line)

ARMS = METHODS + ('random', )
METRIC = 'top-1'
LOSS_NAMES = {'greenmim': 'L2 loss, per-unit normalised pixels (masked units)',
              'simmim': 'L1 loss, normalised pixels (masked units)'}
NUM_RECONSTRUCTIONS = 4


@dataclass
class Settings:
    """What one run of the experiment does (the command's options)."""
    out_dir: str = 'work_dirs/learning_signal'
    data_dir: Optional[str] = None  # default: <out_dir>/data (kept between runs)
    budget_s: float = 1800.0  # CPU seconds of pretraining per method (600: no signal yet)
    seeds: int = 5
    shots: int = 50  # labelled scenes per class for fine-tuning
    finetune_iters: int = 300
    finetune_batch_size: int = 16
    finetune_lr: float = 5e-4
    num_unlabelled: int = 20000
    train_per_class: int = 100  # the labelled pool the shots are drawn from
    test_per_class: int = 100
    data_seed: int = 0
    jobs: int = 2  # processes at once (two: the pretraining runs side by side)
    reuse_pretraining: bool = False  # keep finished pretraining runs of the same config
    base_config: str = DEMO_CONFIG

    def check(self) -> None:
        if self.budget_s <= 0 or self.seeds < 1 or self.finetune_iters < 1:
            raise ValueError('budget_s, seeds and finetune_iters must be positive.')
        if self.shots > self.train_per_class:
            raise ValueError(f'shots ({self.shots}) cannot exceed train_per_class '
                             f'({self.train_per_class}), the pool they are drawn from.')
        if self.jobs < 1:
            raise ValueError(f'jobs must be >= 1, got {self.jobs}.')


QUICK = dict(budget_s=2.0, seeds=1, shots=2, finetune_iters=2, num_unlabelled=32,
             train_per_class=2, test_per_class=2)  # the pipeline end to end, seconds


def _say(message: str) -> None:
    print(message, flush=True)


def _load() -> str:
    return '{:.2f} {:.2f} {:.2f}'.format(*os.getloadavg())


def pretrain(settings: Settings, data_root: str) -> Dict[str, dict]:
    """Both methods side by side for the same CPU budget; returns their costs."""
    jobs, every_job = [], {}
    for method in METHODS:
        work_dir = osp.join(settings.out_dir, f'pretrain_{method}')
        os.makedirs(work_dir, exist_ok=True)
        cfg = pretrain_config(method, data_root, work_dir, settings.budget_s,
                              base_config=settings.base_config)
        config = osp.join(work_dir, f'pretrain_{method}.py')
        job = every_job[method] = RunnerJob(f'pretrain_{method}', config, work_dir)
        if settings.reuse_pretraining and _finished_with(job, cfg.pretty_text):
            _say(f'{job.name}: reusing the finished run in {work_dir} (same config)')
        else:
            cfg.dump(config)
            jobs.append(job)
    if jobs:
        _say(f'pretraining {", ".join(j.name for j in jobs)} side by side, '
             f'{settings.budget_s:.0f} CPU s each (load {_load()})')

    def done(job: RunnerJob, wall: float) -> None:
        _say(f'  {job.name} done in {wall:.0f} s wall (load {_load()})')

    run_jobs(jobs, min(settings.jobs, max(len(jobs), 1)), done)
    costs = {}
    for method, job in every_job.items():  # run now or reused
        with open(osp.join(job.work_dir, 'cpu_budget.json')) as f:
            costs[method] = dict(json.load(f), config=job.config,
                                 loss_name=LOSS_NAMES[method])
    return costs


def _finished_with(job: RunnerJob, config_text: str) -> bool:
    """Whether ``job`` already ran to the end with exactly this config."""
    summary = osp.join(job.work_dir, 'cpu_budget.json')
    if not (osp.isfile(job.config) and osp.isfile(summary)):
        return False
    with open(job.config) as f:
        if f.read() != config_text:
            return False
    with open(summary) as f:
        return osp.isfile(json.load(f)['checkpoint'])


def finetune(settings: Settings, data_root: str,
             checkpoints: Dict[str, Optional[str]]) -> Dict[str, List[float]]:
    """Every arm on every seed's few-shot split; top-1 accuracies (fractions)."""
    jobs, arm_seed = [], []
    for seed in range(settings.seeds):
        ann_file = write_fewshot_split(data_root, settings.shots, seed)
        for arm, checkpoint in checkpoints.items():
            work_dir = osp.join(settings.out_dir, 'finetune', f'{arm}_seed{seed}')
            os.makedirs(work_dir, exist_ok=True)
            cfg = finetune_config(
                data_root, ann_file, work_dir, checkpoint, SHAPE_KINDS,
                iters=settings.finetune_iters, seed=seed,
                batch_size=settings.finetune_batch_size, lr=settings.finetune_lr,
                base_config=settings.base_config)
            config = osp.join(work_dir, f'finetune_{arm}_seed{seed}.py')
            cfg.dump(config)
            jobs.append(RunnerJob(f'finetune_{arm}_seed{seed}', config, work_dir,
                                  test=True))
            arm_seed.append((arm, seed))
    _say(f'fine-tuning {len(checkpoints)} initialisations x {settings.seeds} seeds, '
         f'{settings.shots} shots per class, {settings.finetune_iters} steps each')
    finished = []

    def done(job: RunnerJob, wall: float) -> None:
        finished.append(job)
        top1 = job.metrics()['accuracy/top1'] / 100
        _say(f'  [{len(finished)}/{len(jobs)}] {job.name}: {METRIC} {top1:.3f} '
             f'({wall:.0f} s wall, load {_load()})')

    run_jobs(jobs, settings.jobs, done)
    accuracies: Dict[str, List[float]] = {arm: [] for arm in checkpoints}
    for (arm, _), job in zip(arm_seed, jobs):
        accuracies[arm].append(job.metrics()['accuracy/top1'] / 100)
    return accuracies


def probe_arms(settings: Settings, data_root: str,
               checkpoints: Dict[str, Optional[str]]) -> Dict[str, List[ProbeResult]]:
    """k-NN and linear probes of every arm's frozen encoder on the labelled pool
    (:mod:`.feature_probe`); the random arm once per seed."""
    _say('probing the frozen encoders (k-NN and linear, on the whole labelled pool)')
    demo = load_demo_config(settings.base_config).model.backbone
    backbone = dict(arch=demo.arch, img_size=demo.img_size, window_size=demo.window_size)
    train = read_split(data_root, 'train', 'train.txt')
    test = read_split(data_root, 'test', 'test.txt')
    return {arm: [probe(backbone, checkpoint, train, test, seed)
                  for seed in (range(settings.seeds) if checkpoint is None else [0])]
            for arm, checkpoint in checkpoints.items()}


def run(settings: Settings) -> Dict[str, object]:
    """The whole experiment; writes its results under ``settings.out_dir``."""
    settings.check()
    start, load_start = time.perf_counter(), _load()
    settings.out_dir = osp.abspath(settings.out_dir)  # the configs work from anywhere
    os.makedirs(settings.out_dir, exist_ok=True)
    data_dir = osp.abspath(settings.data_dir or osp.join(settings.out_dir, 'data'))
    _say(f'scenes: {settings.num_unlabelled} unlabelled, {settings.train_per_class} + '
         f'{settings.test_per_class} labelled per class in {data_dir}')
    data = make_scene_sets(data_dir, settings.num_unlabelled, settings.train_per_class,
                           settings.test_per_class, seed=settings.data_seed)
    data_root = data['data_root']

    costs = pretrain(settings, data_root)
    load_after_pretraining = _load()
    checkpoints: Dict[str, Optional[str]] = {m: costs[m]['checkpoint'] for m in METHODS}
    checkpoints['random'] = None
    accuracies = finetune(settings, data_root, checkpoints)
    probes = probe_arms(settings, data_root, checkpoints)

    out = settings.out_dir
    plot_loss_curves(costs, osp.join(out, 'loss_curves.png'))
    plot_accuracies(accuracies, METRIC, osp.join(out, 'accuracy.png'))
    with open(data['test_ann']) as f:
        test_files = [osp.join(data_root, 'test', line.split()[0]) for line in f]
    step = max(1, len(test_files) // NUM_RECONSTRUCTIONS)
    reconstruction_picture({m: costs[m]['config'] for m in METHODS}, checkpoints,
                           test_files[::step][:NUM_RECONSTRUCTIONS],
                           osp.join(out, 'reconstructions.png'))
    table = results_table(accuracies, costs)
    probe_md = probe_table(probes)
    line = summary_line(accuracies, METRIC)
    results = dict(settings=asdict(settings), accuracies=accuracies, line=line,
                   probes={arm: [asdict(p) for p in runs] for arm, runs in probes.items()},
                   pretraining={m: {k: v for k, v in c.items() if k != 'curve'}
                                for m, c in costs.items()},
                   load_average=dict(start=load_start, after_pretraining=load_after_pretraining,
                                     end=_load()),
                   wall_s=time.perf_counter() - start)
    with open(osp.join(out, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1)
    with open(osp.join(out, 'results.md'), 'w') as f:
        f.write(table + '\n\nFrozen features (top-1 per stage, mean +- std over random '
                'initialisations):\n\n' + probe_md + '\n')
    _say('')
    _say(table)
    _say('')
    _say(probe_md)
    _say(f'\nresults, loss_curves.png, accuracy.png, reconstructions.png in {out} '
         f"({results['wall_s']:.0f} s wall; load average {load_start} at the start, "
         f"{results['load_average']['end']} at the end)")
    _say(line)
    return results
