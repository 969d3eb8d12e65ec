"""The error types of greenmim_mm and the exit codes the tools give them: the ground floor.

This module imports nothing of the package (nor of mmengine): every other module takes
its exceptions from here, so no import runs back up a layer to find one.

Exit codes of every tool (``tools/*.py``, the ``greenmim-*`` commands and the
``tools/*.sh`` launchers; how they print is :mod:`greenmim_cli.exits`):

====  ===========================================================================
0     done
1     a bug: Python's traceback, in full (please report it)
2     a mistake in the input -- command line, config, data or checkpoint -- explained
      in one line on stderr: ``error: <problem>; <fix>`` (:class:`UsageError`,
      :class:`CheckpointMismatchError`, :class:`OfficialCheckpointError`)
3     training stopped because the loss was not finite for too many steps in a row
      (:class:`NonFiniteLossError`); the checkpoints written before are intact
====  ===========================================================================
"""

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3


class UsageError(ValueError):
    """A mistake in the input (command line, config, data, checkpoint); its message
    names the problem and the fix: ``<problem>; <fix>``."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose keys or shapes do not fit the configured module."""


class OfficialCheckpointError(UsageError):
    """A source the converter cannot read as a published GreenMIM pretraining
    checkpoint, or a destination it cannot write; the message is one line."""


class NonFiniteLossError(RuntimeError):
    """The loss was NaN or infinite for too many training steps in a row."""


def exit_code(error: BaseException) -> int:
    """The exit code a tool ends with for ``error`` (see the table above)."""
    if isinstance(error, (UsageError, CheckpointMismatchError)):
        return EXIT_USAGE
    if isinstance(error, NonFiniteLossError):
        return EXIT_DIVERGED
    return EXIT_BUG


def one_line(text: str) -> str:
    """``text`` on one line: its lines joined with '; ' (after a ':' with a space)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    joined = lines[0] if lines else ''
    for line in lines[1:]:
        joined += (' ' if joined.endswith(':') else '; ') + line
    return joined
