"""Checkpoints that survive a crash, a resume that finds the newest complete one, and
loads that stop when a checkpoint does not fit the model.

mmengine's ``CheckpointHook`` writes ``iter_N.pth`` and ``last_checkpoint`` in place and
deletes the oldest checkpoint (``max_keep_ckpts``) *before* writing the new one: a
process killed at the wrong moment leaves a truncated ``.pth``, an empty
``last_checkpoint`` (on which ``--resume`` fails) or, with ``max_keep_ckpts=1``, no
usable checkpoint at all. :class:`SafeCheckpointHook` (``default_hooks.checkpoint.type``
in every config of this project) changes three things and keeps everything else:

* **Writes are atomic.** A checkpoint is written by mmengine's own
  ``Runner.save_checkpoint`` to ``<name>.tmp``, flushed to disk and renamed over
  ``<name>`` (``os.replace``: at every moment the name holds the old file or the whole
  new one); ``last_checkpoint`` likewise. An outdated checkpoint is removed only after
  the new one and ``last_checkpoint`` are complete. Leftover ``.tmp`` files of a killed
  run are removed when the next run starts.
* **Resume finds the newest complete checkpoint** (``resume=True`` without a file, i.e.
  ``--resume``): :func:`find_resumable_checkpoint` looks at ``last_checkpoint`` and the
  ``iter_N.pth``/``epoch_N.pth`` files of the work dir, newest first, skips an empty
  ``last_checkpoint`` or an empty/truncated/non-checkpoint file with a warning naming
  it, and hands the first complete one to mmengine's ``Runner.resume``.
* **A checkpoint that does not fit stops the run before the first step**
  (``load_from``, ``--resume``, ``tools/test.py CKPT``): mmengine loads with
  ``strict=False``, so another model's checkpoint only warns and trains (or tests) from
  random weights. The hook checks the loaded state dict against the model with the
  strict initializer's :func:`~greenmim_mm.engine.pretrained_init.load_and_check` and
  raises :class:`~greenmim_mm.errors.CheckpointMismatchError` with its
  report (:mod:`greenmim_mm.engine.load_report`).

Non-local storage (``backend_args`` for Petrel, HTTP, ...) keeps mmengine's behaviour.
"""
import os
import os.path as osp
import re
import zipfile
from typing import List, Optional, Sequence, Tuple

from mmengine.dist import is_main_process
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from .load_report import mismatch_message
from ..errors import CheckpointMismatchError, UsageError
from ..fileio import commit
from .pretrained_init import _strip_prefix, load_and_check

TMP_SUFFIX = '.tmp'
LAST_CHECKPOINT = 'last_checkpoint'
CHECKPOINT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')
# missing from a whole-model checkpoint and rebuilt by the model: Swin's index buffers
LOAD_ALLOWED_MISSING: Tuple[str, ...] = (r'(^|\.)relative_position_index$', )
_LEGACY_TORCH_MAGIC = b'\x80\x02'  # torch.save(..., _use_new_zipfile_serialization=False)


def checkpoint_problem(path: str) -> Optional[str]:
    """What is wrong with the checkpoint file ``path``, or None if it looks complete.

    Cheap (reads the first bytes and the zip directory at the end, not the tensors):
    torch >= 1.6 writes a zip archive, whose directory is written last, so a truncated
    file has none; older files are a pickle stream (accepted as they are).
    """
    if not osp.isfile(path):
        return 'not a file'
    if osp.getsize(path) == 0:
        return 'empty (0 bytes: its save was interrupted)'
    with open(path, 'rb') as f:
        head = f.read(4)
    if head.startswith(b'PK'):
        return None if zipfile.is_zipfile(path) else (
            'incomplete (a truncated archive: its save was interrupted)')
    if head.startswith(_LEGACY_TORCH_MAGIC):
        return None
    return f'not a PyTorch checkpoint (it starts with {head!r})'


def put_atomically(data: bytes, path: str, backend: Optional[LocalBackend] = None) -> None:
    """Write ``data`` to ``path`` through ``<path>.tmp`` and a rename: a crash leaves
    ``path`` with its old content or the new one, never a part."""
    (backend or LocalBackend()).put(data, path + TMP_SUFFIX)
    commit(path + TMP_SUFFIX, path)


def _step(path: str) -> Tuple[str, int]:
    match = CHECKPOINT_NAME.match(osp.basename(path))
    return (match.group(1), int(match.group(2))) if match else ('', -1)


def find_resumable_checkpoint(work_dir: str, warn=print) -> Optional[str]:
    """The newest complete checkpoint of ``work_dir`` (None if there is none).

    Candidates: the file named in ``last_checkpoint`` and every ``iter_N.pth`` /
    ``epoch_N.pth`` of the work dir (and of the named file's folder), the highest N
    first (the named file first among equals). Each one skipped -- and an empty or
    dangling ``last_checkpoint`` -- is reported through ``warn`` with its name.
    """
    pointer = osp.join(work_dir, LAST_CHECKPOINT)
    named = None
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip() or None
        if named is None:
            warn(f'{pointer} is empty (its rewrite was interrupted): resuming from the '
                 'newest complete checkpoint in the folder instead')
    folders = {work_dir} | ({osp.dirname(named)} if named else set())
    found = {osp.join(folder, name) for folder in folders if osp.isdir(folder)
             for name in os.listdir(folder) if CHECKPOINT_NAME.match(name)}
    kind = _step(named)[0] if named else ''
    ordered: List[str] = sorted(
        found, key=lambda p: (_step(p)[0] == kind, _step(p)[1], p == named), reverse=True)
    if named and named not in found:
        ordered.insert(0, named)  # a custom filename_tmpl
    for path in ordered:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        warn(f'not resuming from {path}: {problem}; trying an older checkpoint')
    return None


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with crash-safe writes, a resume from the newest
    complete checkpoint and a strict check of loaded checkpoints (module docstring).

    Args:
        load_allowed_missing: regular expressions (``re.search``) on model keys that may
            be absent from a checkpoint given by ``load_from``/``--resume``/``tools/
            test.py`` (the model rebuilds them). Defaults to Swin's
            ``relative_position_index`` buffers.
        **kwargs: mmengine's ``CheckpointHook`` arguments (``interval``, ``by_epoch``,
            ``max_keep_ckpts``, ...).
    """

    def __init__(self, load_allowed_missing: Sequence[str] = LOAD_ALLOWED_MISSING,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.load_allowed_missing = list(load_allowed_missing)

    # ---------------------------------------------------------------- resume
    def before_run(self, runner) -> None:
        """``resume=True`` without a file: pick the newest complete checkpoint for
        mmengine's ``Runner.resume`` (it would read ``last_checkpoint`` blindly)."""
        if not runner._resume or runner._load_from is not None:
            return
        found = find_resumable_checkpoint(runner.work_dir, runner.logger.warning)
        if found is None:
            runner.logger.info(f'resume: no complete checkpoint in {runner.work_dir}, '
                               'training starts from the beginning')
            runner._resume = False
        else:
            runner._load_from = found

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process() and isinstance(self.file_backend, LocalBackend):
            for folder in {self.out_dir, runner.work_dir}:
                for name in os.listdir(folder) if osp.isdir(folder) else []:
                    if name.endswith(TMP_SUFFIX) and (
                            CHECKPOINT_NAME.match(name[:-len(TMP_SUFFIX)])
                            or name == LAST_CHECKPOINT + TMP_SUFFIX):
                        runner.logger.info(f'removing {osp.join(folder, name)}, a '
                                           'partial file of an interrupted save')
                        os.remove(osp.join(folder, name))

    # ---------------------------------------------------------------- load check
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Raise :class:`CheckpointMismatchError` unless ``checkpoint`` fits the model."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state_dict = checkpoint.get('state_dict', checkpoint)
        if state_dict and all(k.startswith('module.') for k in state_dict):
            state_dict = _strip_prefix(state_dict, 'module.')  # saved by a DDP wrapper
        report = load_and_check(model, state_dict)
        report.missing = [k for k in report.missing if not any(
            re.search(p, k) for p in self.load_allowed_missing)]
        if report.fits:
            return
        shapes = {k: tuple(v.shape) for k, v in state_dict.items() if hasattr(v, 'shape')}
        source = f'checkpoint {runner._load_from}'
        raise CheckpointMismatchError(
            mismatch_message(source, model, report, shapes,
                             'default_hooks.checkpoint.load_allowed_missing=[regex, ...]')
            + '\n'
            'Give a checkpoint of this config\'s model; to start only the backbone from '
            'a pretraining checkpoint, set model.backbone.init_cfg=dict('
            "type='GreenMIMPretrained', checkpoint=PRETRAIN.pth, prefix='backbone.')")

    # ---------------------------------------------------------------- save
    def _save_best_checkpoint(self, runner, metrics) -> None:
        """mmengine's ``save_best``, written crash-safe: the new best checkpoint through
        ``<name>.tmp`` and a rename (:func:`commit`), and the previous best removed only
        after it (mmengine removes it first, then writes the new one in place)."""
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_best_checkpoint(runner, metrics)
        save, remove = runner.save_checkpoint, self.file_backend.remove
        removed: List[str] = []
        written: List[str] = []

        def save_through_tmp(out_dir, filename, *args, **kwargs):
            if not osp.basename(filename).startswith('best_'):
                return save(out_dir, filename, *args, **kwargs)
            save(out_dir, filename + TMP_SUFFIX, *args, **kwargs)
            path = osp.join(out_dir, filename)
            if is_main_process():
                commit(path + TMP_SUFFIX, path)
            written.append(path)

        runner.save_checkpoint = save_through_tmp  # this call only (deleted below)
        self.file_backend.remove = removed.append
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            del runner.save_checkpoint, self.file_backend.remove
        for path in removed:  # the previous best (and checkpoints rotated out)
            if osp.abspath(path) not in map(osp.abspath, written) and \
                    self.file_backend.isfile(path):
                self.file_backend.remove(path)

    def _rotate(self, runner, step: int) -> Optional[int]:
        """mmengine's ``max_keep_ckpts`` bookkeeping; returns the step whose file is to
        be removed (once the new checkpoint is complete) instead of removing it."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids
                                        and self.keep_ckpt_ids[-1] == step):
            return None
        outdated = (self.keep_ckpt_ids.popleft()
                    if len(self.keep_ckpt_ids) == self.max_keep_ckpts else None)
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        return outdated

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        outdated = self._rotate(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(  # the main process writes <name>.tmp
            self.out_dir, filename + TMP_SUFFIX, self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta,
            by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        commit(self.last_ckpt + TMP_SUFFIX, self.last_ckpt)
        put_atomically(self.last_ckpt.encode(), osp.join(runner.work_dir, LAST_CHECKPOINT),
                       self.file_backend)
        if outdated is not None:
            path = self.file_backend.join_path(self.out_dir,
                                               self.filename_tmpl.format(outdated))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)


def load_fitting_checkpoint(model, path: str,
                            allowed_missing: Sequence[str] = LOAD_ALLOWED_MISSING) -> None:
    """Load the checkpoint file ``path`` into ``model`` (a whole model's, as the Runner
    saves it), with the tools' errors: a broken file is a ``UsageError``, a checkpoint
    of another architecture a :class:`CheckpointMismatchError` naming what differs (both
    one line and exit code 2 under ``run_tool``)."""
    from mmengine.runner.checkpoint import _load_checkpoint
    problem = checkpoint_problem(path)
    if problem is not None:
        raise UsageError(f'checkpoint {path} is {problem}; give a complete checkpoint '
                         "of this config's model (training writes iter_N.pth)")
    checkpoint = _load_checkpoint(path, map_location='cpu')
    state_dict = checkpoint.get('state_dict', checkpoint)
    if state_dict and all(k.startswith('module.') for k in state_dict):
        state_dict = _strip_prefix(state_dict, 'module.')
    report = load_and_check(model, state_dict)
    report.missing = [k for k in report.missing
                      if not any(re.search(p, k) for p in allowed_missing)]
    if not report.fits:
        shapes = {k: tuple(v.shape) for k, v in state_dict.items() if hasattr(v, 'shape')}
        raise CheckpointMismatchError(
            mismatch_message(f'checkpoint {path}', model, report, shapes) + '\n'
            "Give a checkpoint of this config's model (the config it was trained with).")


def use_safe_checkpoint_hook(cfg) -> None:
    """Run a config's mmengine ``CheckpointHook`` as :class:`SafeCheckpointHook` (same
    arguments; what ``tools/train.py`` and ``tools/test.py`` do for every config)."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if isinstance(hook, dict) and hook.get('type') in ('CheckpointHook',
                                                       'mmengine.CheckpointHook'):
        hook['type'] = 'SafeCheckpointHook'
