"""What the tools keep off the terminal, and why: the one place that filters output.

mmengine's ``Runner`` sends every record of its logger both to the terminal and to
``<work_dir>/<timestamp>/<timestamp>.log``. The log file stays complete; the terminal
(the handler :func:`quiet_console` filters) leaves out the long reports a person does
not read during a run (:data:`FILE_ONLY`: environment, config dump, hook table, one
line per parameter with its own optimizer settings) and the deprecation warnings of
third-party code that nobody running the tools can act on (:data:`THIRD_PARTY_NOISE`,
and the Python warnings of :data:`PYTHON_WARNINGS`). ``--verbose`` (config key
``console_log = 'full'``) keeps mmengine's full terminal. What the tools print instead
(a header and a final block) is :mod:`greenmim_cli.run_report`.

This module imports only the standard library: ``greenmim_cli`` (the tools' package)
calls :func:`quiet_third_party_warnings` when it is imported, before anything imports
mmengine. The library (``import greenmim_mm``) sets no warning filter.
"""
import logging
import warnings
from typing import List, Tuple

# Python warnings of the pinned stack nobody running the tools can act on:
# (category, message regex, reason).
PYTHON_WARNINGS: Tuple[Tuple[type, str, str], ...] = (
    (UserWarning, 'pkg_resources is deprecated as an API',
     'mmengine 0.10.7 and mmcv 2.1.0 import pkg_resources; setuptools is already pinned '
     '< 81 (requirements/constraints.txt), which is what the warning asks for'),
    (FutureWarning, '`broadcast_buffers` is deprecated',
     "torch >= 2.14 on mmengine's DDP wrapper, which gets broadcast_buffers=False for "
     'CPU runs (launch.setup_distributed, as mmengine does on GPUs); its replacement '
     'forward_sync_buffers does not mean the same'),
)

# Log records kept off the terminal (still in the log file): (message start, reason).
FILE_ONLY: Tuple[Tuple[str, str], ...] = (
    ('\n' + '-' * 60 + '\nSystem environment:',
     'the environment report: versions and build flags, 30 lines'),
    ('Config:\n', 'the resolved config, 150 lines (also saved in the work dir)'),
    ('Hooks will be executed in the following order', 'the hook table, 90 lines'),
    ('paramwise_options -- ',
     'one line per parameter with its own lr or weight decay, 100+ lines'),
    ('Distributed training is not used, all SyncBatchNorm',
     'a note about layers these models do not have'),
    ('Checkpoints will be saved to', 'the final block says where they are'),
    ('Exp name: ', 'the work dir already names the run'),
)

# Third-party deprecation warnings of mmengine's own logger: (message start, reason).
THIRD_PARTY_NOISE: Tuple[Tuple[str, str], ...] = (
    ('"FileClient" will be deprecated',
     "mmengine 0.10.7's own CheckpointHook and LoggerHook create a FileClient"),
    ('"HardDiskBackend" is the alias of "LocalBackend"',
     "the same: mmengine's hooks ask for the old name"),
)

QUIET, FULL = 'quiet', 'full'  # values of the config key ``console_log``


def quiet_third_party_warnings() -> None:
    """Ignore the Python warnings of :data:`PYTHON_WARNINGS` (nothing else)."""
    for category, message, _reason in PYTHON_WARNINGS:
        warnings.filterwarnings('ignore', message=message, category=category)


class ConsoleFilter(logging.Filter):
    """Drop the records of :data:`FILE_ONLY` and :data:`THIRD_PARTY_NOISE` (by how
    their message starts); for the terminal handler of mmengine's logger."""

    def __init__(self) -> None:
        super().__init__('greenmim_mm.console')
        self.prefixes = tuple(prefix for prefix, _ in FILE_ONLY + THIRD_PARTY_NOISE)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else str(record.msg)
        return not message.startswith(self.prefixes)


def console_handlers(logger: logging.Logger) -> List[logging.Handler]:
    """The handlers of ``logger`` that write to the terminal (not to a file)."""
    return [handler for handler in logger.handlers
            if isinstance(handler, logging.StreamHandler)
            and not isinstance(handler, logging.FileHandler)]


def quiet_console(logger: logging.Logger) -> None:
    """Put one :class:`ConsoleFilter` on the terminal handlers of ``logger``."""
    for handler in console_handlers(logger):
        if not any(isinstance(f, ConsoleFilter) for f in handler.filters):
            handler.addFilter(ConsoleFilter())
