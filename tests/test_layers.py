"""The layers of the code base (docs/architecture.md): every import of the project's own
modules runs downwards or sideways, never up, and ``import greenmim_mm`` changes nothing
of its host program but the registries (no warning filter, no tools' module loaded).

Read from the source with ``ast`` (every ``import`` / ``from ... import``, also those
inside functions), so a lazy import cannot hide an upward edge.
"""
import ast
import os
import os.path as osp
import subprocess
import sys
from typing import Iterator, List, Tuple

from conftest import REPO_ROOT

# (module prefix, layer): a module may import modules of its own layer or below
LAYERS: Tuple[Tuple[str, int], ...] = (
    ('greenmim_mm.errors', 0), ('greenmim_mm.version', 0), ('greenmim_mm.fileio', 0),
    ('greenmim_mm.ops', 1),
    ('greenmim_mm.models', 2), ('greenmim_mm.datasets', 2),
    ('greenmim_mm.visualization', 3), ('greenmim_mm.engine', 3),
    ('greenmim_mm', 4),  # the package's __init__: registers everything below
    ('greenmim_cli', 5),
    ('greenmim_lab', 6),
)
PACKAGES = ('greenmim_mm', 'greenmim_cli', 'greenmim_lab')


def layer(module: str) -> int:
    for prefix, rank in LAYERS:
        if module == prefix or module.startswith(prefix + '.'):
            return rank
    raise AssertionError(f'{module} is in no layer: add it to LAYERS and docs/architecture.md')


def module_name(path: str) -> str:
    relative = osp.relpath(path, REPO_ROOT)[:-len('.py')].replace(os.sep, '.')
    return relative[:-len('.__init__')] if relative.endswith('.__init__') else relative


def own_imports(path: str) -> Iterator[str]:
    """The project modules ``path`` imports (relative imports resolved)."""
    name = module_name(path)
    package = name if path.endswith('__init__.py') else name.rpartition('.')[0]
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')
                parts = parts[:len(parts) - node.level + 1]
                base = '.'.join(parts + ([base] if base else []))
            # `from pkg import module` imports pkg.module when it is one
            targets = [f'{base}.{alias.name}' if _is_module(f'{base}.{alias.name}') else base
                       for alias in node.names]
        else:
            continue
        yield from (target for target in targets if target.split('.')[0] in PACKAGES)


def _is_module(name: str) -> bool:
    path = osp.join(REPO_ROOT, *name.split('.'))
    return osp.isfile(path + '.py') or osp.isfile(osp.join(path, '__init__.py'))


def source_files() -> List[str]:
    files = []
    for package in PACKAGES:
        for folder, _, names in os.walk(osp.join(REPO_ROOT, package)):
            files += [osp.join(folder, name) for name in names if name.endswith('.py')]
    return sorted(files)


def test_imports_run_only_downwards():
    upward = []
    for path in source_files():
        name = module_name(path)
        for target in own_imports(path):
            if layer(target) > layer(name):
                upward.append(f'{name} (layer {layer(name)}) imports {target} '
                              f'(layer {layer(target)})')
    assert not upward, '\n'.join(upward)


def test_the_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself: an ops module that imports the engine is reported."""
    (tmp_path / 'greenmim_mm' / 'ops').mkdir(parents=True)
    bad = tmp_path / 'greenmim_mm' / 'ops' / 'bad.py'
    bad.write_text('def f():\n    from ..engine.checkpoint import commit\n')
    (tmp_path / 'greenmim_mm' / 'engine').mkdir()
    (tmp_path / 'greenmim_mm' / 'engine' / 'checkpoint.py').write_text('')
    monkeypatch.setattr(sys.modules[__name__], 'REPO_ROOT', str(tmp_path))
    [target] = list(own_imports(str(bad)))
    assert target == 'greenmim_mm.engine.checkpoint'
    assert layer(target) > layer(module_name(str(bad)))


def test_import_changes_only_the_registries():
    """``import greenmim_mm``: no warning filter of its own, no tools' or harness module
    loaded. Its third-party imports (numpy, scipy, mmengine, ...) set filters of their own:
    a first process lists them, a second imports them all before the snapshot."""
    listing = subprocess.run(
        [sys.executable, '-c', 'import sys, json; import greenmim_mm; print(json.dumps('
         'sorted(m for m in sys.modules if not m.startswith("greenmim"))))'],
        capture_output=True, text=True, cwd=REPO_ROOT)
    assert listing.returncode == 0, listing.stderr[-2000:]
    code = ('import importlib, json, sys, warnings\n'
            f'for name in json.loads({listing.stdout.strip().splitlines()[-1]!r}):\n'
            '    try:\n        importlib.import_module(name)\n'
            '    except Exception:\n        pass\n'
            'before = list(warnings.filters)\n'
            'import greenmim_mm\n'
            'assert warnings.filters == before, warnings.filters[:3]\n'
            'loaded = [m for m in sys.modules if m.split(".")[0] in '
            '("greenmim_cli", "greenmim_lab")]\n'
            'assert not loaded, loaded\n'
            'from mmpretrain.registry import MODELS\n'
            'assert MODELS.get("GreenMIMSwinTransformer") is not None\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
