"""Atomic file writes: a crash leaves a path with its old content or the new, never a part.

Below everything but :mod:`greenmim_mm.errors`: the checkpoint hook and the converters
both write through :func:`commit`.
"""
import os
import os.path as osp


def fsync(path: str) -> None:
    """Flush the file or folder ``path`` to disk (best effort where it cannot be opened)."""
    flags = os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) if osp.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. folders cannot be opened on some systems
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(tmp_path: str, path: str) -> None:
    """Make the complete file ``tmp_path`` durable and rename it to ``path`` (atomic)."""
    fsync(tmp_path)
    os.replace(tmp_path, path)
    fsync(osp.dirname(osp.abspath(path)))
