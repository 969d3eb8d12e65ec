"""Run mmengine ``Runner`` jobs in forked single-thread processes, a few at a time.

Each job is a config file: a forked child builds ``Runner.from_cfg`` from it, trains,
optionally tests (writing the metrics to ``<work_dir>/metrics.json``) and exits. Forking
from a parent that has already imported torch and the OpenMMLab stack saves the ~5 s
import of a fresh interpreter per job, and each child is its own process, so its CPU
time (what ``CPUTimeBudgetHook`` counts) is its own. The children's output goes to
``<work_dir>/run.log``; a failed job stops the others and raises with the end of its log.

The parent must use one torch thread (``torch.set_num_threads(1)``) before it forks:
a child forked from a process whose OpenMP pool has several threads can hang.
"""
import json
import multiprocessing
import os
import os.path as osp
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Callable, Dict, List, Optional

LOG_FILE = 'run.log'
METRICS_FILE = 'metrics.json'


@dataclass
class RunnerJob:
    """One training run: ``config`` (a file) trains in ``work_dir``; ``test`` runs
    ``runner.test()`` afterwards and saves its metrics."""
    name: str
    config: str
    work_dir: str
    test: bool = False

    @property
    def log(self) -> str:
        return osp.join(self.work_dir, LOG_FILE)

    def metrics(self) -> Dict[str, float]:
        """The test metrics the job wrote."""
        with open(osp.join(self.work_dir, METRICS_FILE)) as f:
            return json.load(f)


def _run_in_child(job: RunnerJob) -> None:
    """The child's body: one thread, output to the log, train (and test)."""
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    os.makedirs(job.work_dir, exist_ok=True)
    log = os.open(job.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    # Python-level streams too: the parent's may be wrappers (e.g. pytest's capture)
    sys.stdout = open(1, 'w', buffering=1, closefd=False)
    sys.stderr = open(2, 'w', buffering=1, closefd=False)
    torch.set_num_threads(1)
    runner = Runner.from_cfg(Config.fromfile(job.config))
    runner.train()
    if job.test:
        metrics = runner.test()
        with open(osp.join(job.work_dir, METRICS_FILE), 'w') as f:
            json.dump({key: float(value) for key, value in metrics.items()}, f)


def _log_tail(path: str, lines: int = 30) -> str:
    if not osp.isfile(path):
        return '(no log)'
    with open(path, errors='replace') as f:
        return ''.join(f.readlines()[-lines:])


def run_jobs(jobs: List[RunnerJob], parallel: int,
             on_done: Optional[Callable[[RunnerJob, float], None]] = None) -> None:
    """Run ``jobs`` in forked processes, at most ``parallel`` at once, in list order.

    ``on_done(job, wall_seconds)`` is called in the parent as each job finishes.

    Raises:
        RuntimeError: a job's process failed; the others are terminated, and the
            message holds the end of the failed job's log.
    """
    if parallel < 1:
        raise ValueError(f'parallel must be >= 1, got {parallel}.')
    context = multiprocessing.get_context('fork')
    pending = list(jobs)
    running: Dict[int, tuple] = {}  # sentinel -> (process, job, start)
    try:
        while pending or running:
            while pending and len(running) < parallel:
                job = pending.pop(0)
                process = context.Process(target=_run_in_child, args=(job, ),
                                          name=job.name)
                process.start()
                running[process.sentinel] = (process, job, time.perf_counter())
            for sentinel in wait(list(running)):
                process, job, start = running.pop(sentinel)
                process.join()
                if process.exitcode != 0:
                    raise RuntimeError(
                        f'Job {job.name} failed (exit code {process.exitcode}); the end '
                        f'of {job.log}:\n{_log_tail(job.log)}')
                if on_done is not None:
                    on_done(job, time.perf_counter() - start)
    finally:
        for process, _, _ in running.values():
            process.terminate()
            process.join()
