"""The console commands a ``pip install`` gives (``setup.py``'s entry points), the same
as the repository's scripts: ``greenmim-train`` = ``tools/train.py``, ``greenmim-test`` =
``tools/test.py``, ``greenmim-visualize`` = ``tools/visualize_reconstruction.py``.

Each ends a mistake in the input with one line and exit code 2 (:func:`.exits.run_tool`).
"""
from .exits import run_tool


def _train() -> None:
    from .launch import prepare_train, train
    train(prepare_train())


def _test() -> None:
    from .launch import evaluate, prepare_test
    evaluate(*prepare_test())


def _visualize() -> None:
    from .reconstruct import main
    main()


def train() -> None:
    """``greenmim-train CONFIG [options]`` (``--help`` lists them)."""
    run_tool(_train)


def test() -> None:
    """``greenmim-test CONFIG CHECKPOINT [options]``."""
    run_tool(_test)


def visualize() -> None:
    """``greenmim-visualize CONFIG CHECKPOINT IMAGE [options]``."""
    run_tool(_visualize)
