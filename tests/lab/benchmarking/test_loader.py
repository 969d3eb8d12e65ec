"""The loader section: stage timings of four pipelines side by side, bytes per image,
cores per GPU, on JPEGs it makes."""
import os.path as osp

import pytest

from greenmim_lab.benchmarking import cli
from greenmim_lab.benchmarking.loader import RATES, loader_table, make_jpegs


def test_makes_imagenet_like_jpegs(tmp_path):
    from PIL import Image

    paths = make_jpegs(str(tmp_path), count=3, seed=1)
    for path in paths:
        with Image.open(path) as image:
            assert image.format == 'JPEG' and image.mode == 'RGB'
            assert 375 <= image.height < 500 and 450 <= image.width < 560
        assert osp.getsize(path) > 30_000


@pytest.fixture(scope='module')
def table():
    return loader_table('tiny', images=3, batch=4, repeats=1)


def test_five_pipelines_stage_by_stage(table):
    names = [row[0] for row in table['rows']]
    assert len(names) == 5 and 'MAE (mmpretrain)' in names
    header = table['header']
    for row in table['rows']:
        cells = dict(zip(header, row))
        stages = [v for k, v in cells.items() if k.endswith(' ms') and k != 'total ms']
        assert cells['total ms'] == pytest.approx(sum(stages))
        assert cells['load + decode ms'] > 0 and cells['crop + resize ms'] > 0
        if 'device' in row[0]:  # the JPEG bytes travel, a third of the pixels' bytes
            assert 10 < cells['images KB'] < 150
            continue
        assert cells['img/s per core'] == pytest.approx(1e3 / cells['total ms'])
        greenmim = row[0].startswith('GreenMIM')
        # only GreenMIM hands over a plan; packed, it is smaller than unpacked
        assert (cells['plan KB'] > 0) == greenmim
        if greenmim:
            assert cells['plan KB'] < cells['plan unpacked KB']
        assert cells['images KB'] == pytest.approx(
            (224 if 'SimMIM' not in row[0] else 192)**2 * 3 / 1e3)
        assert cells['handed over KB'] == pytest.approx(
            cells['images KB'] + cells['masks KB'] + cells['plan KB'])


def test_cores_per_gpu(table):
    for name, rate, *cores in table['cores']['rows']:
        assert cores == pytest.approx([r / rate for r in RATES])


def test_device_decode_rate(table):
    (device, batch, ms, rate), = table['decode']['rows']
    assert device == 'CPU, one thread' and batch == 4
    assert rate == pytest.approx(1e3 * batch / ms)


def test_section_in_the_command_line():
    args = cli.parse_args(['--section', 'loader', '--loader-images', '3'])
    assert args.section == 'loader' and args.loader_images == 3
