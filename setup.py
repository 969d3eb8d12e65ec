from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements(name: str) -> list:
    lines = (HERE / 'requirements' / name).read_text().splitlines()
    return [line.split('#')[0].strip() for line in lines
            if line.split('#')[0].strip()]


version: dict = {}
exec((HERE / 'greenmim_mm' / 'version.py').read_text(), version)

setup(
    name='greenmim_mm',
    version=version['__version__'],
    description='GreenMIM (visible-only masked image modeling for hierarchical '
    'vision transformers) for OpenMMLab: mmpretrain and mmdet',
    long_description=(HERE / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    # the library and the tools' layer; the benchmarks and experiments (greenmim_lab)
    # stay in the repository
    packages=find_packages(include=['greenmim_mm', 'greenmim_mm.*',
                                    'greenmim_cli', 'greenmim_cli.*']),
    # the configs, as mmpretrain ships its own: greenmim_mm/.mim/configs links to
    # configs/ in a checkout, and a wheel holds a copy (greenmim-train greenmim_mm::...)
    package_data={'greenmim_mm': ['.mim/configs/**/*.py']},
    entry_points={'console_scripts': [
        'greenmim-train = greenmim_cli.commands:train',
        'greenmim-test = greenmim_cli.commands:test',
        'greenmim-visualize = greenmim_cli.commands:visualize',
    ]},
    python_requires='>=3.8',
    install_requires=read_requirements('runtime.txt'),
    extras_require={
        'spconv': ['spconv-cu118'],
        'tests': read_requirements('tests.txt'),
        'tensorboard': ['tensorboard'],
    },
    license='Apache License 2.0',
    zip_safe=False,
)
