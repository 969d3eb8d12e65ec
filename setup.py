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
    packages=find_packages(include=['greenmim_mm', 'greenmim_mm.*']),
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
