"""pytest plugin of the GPU check (`-p greenmim_lab.benchmarking.cuda_tests`).

Marks ``cuda`` every test that is skipped without CUDA (a ``skipif`` whose reason
names CUDA), so ``-m cuda`` selects the CUDA tests wherever they live without each
test file having to carry the marker (tests may also carry ``@pytest.mark.cuda``).
"""
import pytest


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if any('cuda' in str(mark.kwargs.get('reason', '')).lower()
               for mark in item.iter_markers('skipif')):
            item.add_marker(pytest.mark.cuda)
