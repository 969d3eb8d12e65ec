"""How the tools end on a mistake: one line, ``error: <problem>; <fix>``, and an exit code.

The exit codes and the error types are :mod:`greenmim_mm.errors` (the library's ground
floor); this module is how the tools print them. ``--debug`` (or ``GREENMIM_DEBUG=1`` in
the environment) prints the traceback of an explained error too, before its line.

What counts as a mistake in the input (:func:`explain`): a
:class:`~greenmim_mm.errors.UsageError` (raised by the tools' checks before anything is
written), a checkpoint that does not fit the model
(:class:`~greenmim_mm.errors.CheckpointMismatchError`), and a ``ValueError``,
``TypeError``, ``KeyError``, ``FileNotFoundError`` or ``AssertionError`` raised while
mmengine builds an object from the config (its registry's ``build_from_cfg`` is on the
traceback: a wrong argument or type name, a missing file). Everything else is a bug and
keeps its traceback (exit 1).
"""
import argparse
import os
import sys
import traceback
from types import TracebackType
from typing import Any, Callable, Optional, Sequence, Tuple

from mmengine.config import DictAction

from greenmim_mm.errors import EXIT_BUG, EXIT_USAGE, UsageError, exit_code, one_line

DEBUG_ENV = 'GREENMIM_DEBUG'
# raised by constructors given bad arguments (OpenMMLab's check them with assert) and by
# the registry for unknown types
BUILD_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, AssertionError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose mistakes are :class:`UsageError`\\ s (one line, exit 2),
    not a usage block and exit 2 from inside ``parse_args``."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f'{message}; see {self.prog} --help')


class KeyValueAction(DictAction):
    """mmengine's ``--cfg-options`` action; a malformed item is an argparse error
    (``KEY=VALUE`` expected), not a ``ValueError`` from deep inside it."""

    def __call__(self, parser, namespace, values, option_string=None):
        for item in values or []:
            if '=' not in item or item.startswith('='):
                raise argparse.ArgumentError(
                    self, f'{item!r} is not KEY=VALUE (e.g. train_cfg.max_iters=100)')
        try:
            super().__call__(parser, namespace, values, option_string)
        except (ValueError, AssertionError) as error:  # unbalanced brackets, ...
            raise argparse.ArgumentError(self, f'cannot parse {values}: {error}')


def _built_class(tb: Optional[TracebackType]) -> Optional[str]:
    """The name of the innermost object mmengine's ``build_from_cfg`` was building when
    the exception passed through it (None: it did not)."""
    name = None
    while tb is not None:
        frame = tb.tb_frame
        if (frame.f_code.co_name == 'build_from_cfg'
                and frame.f_globals.get('__name__') == 'mmengine.registry.build_functions'):
            obj_cls = frame.f_locals.get('obj_cls')
            obj_type = frame.f_locals.get('obj_type')
            name = getattr(obj_cls, '__name__', None) or str(obj_type or 'an object')
        tb = tb.tb_next
    return name


def explain(error: BaseException) -> Optional[Tuple[str, int]]:
    """``(one-line message, exit code)`` for a mistake in the input; None for a bug."""
    code = exit_code(error)
    if code != EXIT_BUG:
        return one_line(str(error)), code
    if isinstance(error, BUILD_ERRORS):
        built = _built_class(error.__traceback__)
        if built is not None:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            return (f'cannot build {built} from the config: {one_line(str(message))}; '
                    'fix the config or --cfg-options (--debug shows where it failed)',
                    EXIT_USAGE)
    return None


def debug_requested(argv: Optional[Sequence[str]] = None) -> bool:
    """``--debug`` on the command line or ``GREENMIM_DEBUG`` set to a true value."""
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ.get(DEBUG_ENV, '').strip().lower()
    return '--debug' in argv or env not in ('', '0', 'false', 'no')


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """The ``--debug`` flag (read by :func:`run_tool` from ``sys.argv``)."""
    parser.add_argument(
        '--debug', action='store_true',
        help=f'show the traceback of input errors too (or set {DEBUG_ENV}=1)')


def run_tool(main: Callable[[], Any]) -> Any:
    """Run a tool's ``main``; end a mistake in the input with its one line and exit code
    (the traceback too with ``--debug``), let a bug raise (traceback, exit 1)."""
    try:
        return main()
    except Exception as error:  # noqa: B902  (sorted out by explain)
        explained = explain(error)
        if explained is None:
            raise
        message, code = explained
        if debug_requested():
            traceback.print_exc()
        sys.stderr.flush()
        print(f'error: {message}', file=sys.stderr, flush=True)
        sys.exit(code)
