"""The converter of published GreenMIM Swin checkpoints, and what it shares with Twins
(files, family detection, errors, the command line).

The check that matters: random weights in the *published* names and layouts, run
through a reference of the published pretraining computation at each commit
(``official_swin_reference.py``), give the same loss as this project's ``GreenMIM``
built from the pretraining configs (tiny archs, everything else as configured) after
conversion, on the same images and mask -- for the released 2022 checkpoints' patch
merging layout and the current published code's.
"""
import argparse
import dataclasses
import importlib.util
import os.path as osp
import pickle
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from converted_models import REPO_ROOT, build_pretrain_model, converted
from helpers import random_masks
from mmengine.runner import load_checkpoint
from official_mae_reference import noise_keeping_row_major, noise_keeping_shuffled
from official_models import (SWIN_B, SWIN_L_W14, PublishedSwin, mae_pos_embed,
                             published_swin_state_dict)
from official_swin_reference import published_swin

from greenmim_cli.exits import run_tool
from greenmim_mm.errors import UsageError
from greenmim_cli.launch import prepare_train, train
from greenmim_mm.models.official import (OfficialCheckpointError,
                                         convert_official, convert_official_checkpoint,
                                         convert_official_state_dict,
                                         merge_weight_to_unfold)

TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
SWIN = {  # config name: the published architecture it reproduces, tiny
    'swin-base-w7': dataclasses.replace(SWIN_B, **TINY),
    'swin-large-w14': dataclasses.replace(SWIN_L_W14, **TINY),
}
RTOL = 1e-5


@pytest.fixture(scope='module')
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope='module')
def mask() -> torch.Tensor:
    """One 7x7 unit mask with 12 visible units (ratio 0.75), shared by the batch."""
    return random_masks(1, (7, 7), 12, seed=2)[0]


@pytest.fixture(scope='module')
def noise(mask) -> torch.Tensor:
    """The published masking noise for ``mask``, kept units in row-major order."""
    return noise_keeping_row_major(mask, torch.Generator().manual_seed(3))


@pytest.fixture(scope='module')
def official():
    return published_swin_state_dict(SWIN['swin-base-w7'], seed=0)


def assert_same(actual, expected) -> None:
    """Same loss (relative 1e-5) and the same predictions for every unit (fp32)."""
    torch.testing.assert_close(actual[0], expected[0], rtol=RTOL, atol=0)
    torch.testing.assert_close(actual[1], expected[1], rtol=1e-4, atol=1e-5)


def loss_difference(actual, expected) -> float:
    """Relative difference of the losses of two ``(loss, predictions)``."""
    return ((actual[0] - expected[0]).abs() / expected[0].abs()).item()


def prediction_difference(actual, expected) -> float:
    return (actual[1] - expected[1]).abs().max().item()


# --------------------------------------------------------------- exactness
@pytest.mark.parametrize('config', sorted(SWIN))
def test_current_code_checkpoint_reproduces_the_published_loss(config, images, mask,
                                                               noise):
    """Published code since b981012 (Swin's merge layout), ``--merge-order
    greenmim-2023``: the converted model's loss is the published one."""
    published = SWIN[config]
    official = published_swin_state_dict(published, seed=4)
    with torch.no_grad():
        expected = published_swin(official, published, images, noise, 'b981012')
    model = build_pretrain_model(config, published)
    model.load_state_dict(convert_official_state_dict(official, 'greenmim-2023'),
                          strict=True)
    assert_same(converted(model, images, mask), expected)


@pytest.mark.parametrize('config', sorted(SWIN))
def test_released_checkpoint_reproduces_the_2022_loss(config, images, mask, noise):
    """The code of the released checkpoints (4beb99e), default layout: exact where
    its middle-stage coordinates do not matter (stages 1 and 2 without blocks; the
    three patch mergings and the unit-major token order are all exercised)."""
    published = dataclasses.replace(SWIN[config], depths=(2, 0, 0, 2))
    official = published_swin_state_dict(published, seed=5)
    with torch.no_grad():
        expected = published_swin(official, published, images, noise, '4beb99e')
    model = build_pretrain_model(config, published)
    model.load_state_dict(convert_official_state_dict(official), strict=True)
    assert_same(converted(model, images, mask), expected)


def test_2022_code_computes_the_middle_stages_on_scrambled_coordinates(images, mask,
                                                                       noise):
    """With blocks in stages 1 and 2, the 2022 code's loss is not any stock Swin's:
    its coordinates there are scrambled. The converted model equals that computation
    with the coordinates corrected, and differs from the literal one."""
    published = SWIN['swin-base-w7']
    official = published_swin_state_dict(published, seed=6)
    with torch.no_grad():
        literal = published_swin(official, published, images, noise, '4beb99e')
        corrected = published_swin(official, published, images, noise, '4beb99e',
                                   corrected_coords=True)
    model = build_pretrain_model('swin-base-w7', published)
    model.load_state_dict(convert_official_state_dict(official), strict=True)
    actual = converted(model, images, mask)
    assert_same(actual, corrected)
    assert loss_difference(actual, literal) > 2 * RTOL  # beyond the equality tolerance
    assert prediction_difference(actual, literal) > 1e-3


def test_the_layouts_are_told_apart(images, mask, noise, official):
    """Converting with the other layout changes the loss and the predictions: the
    tests above check the permutation, not something it cannot affect."""
    published = SWIN['swin-base-w7']
    with torch.no_grad():
        expected = published_swin(official, published, images, noise, 'b981012')
    model = build_pretrain_model('swin-base-w7', published)
    model.load_state_dict(convert_official_state_dict(official, 'greenmim-2022'))
    actual = converted(model, images, mask)
    assert loss_difference(actual, expected) > 2 * RTOL  # beyond the equality tolerance
    assert prediction_difference(actual, expected) > 1e-3


def test_published_decoder_misplaces_tokens_unless_kept_units_are_row_major(
        images, mask, noise, official):
    """The published decoder puts the encoder's row-major tokens at the units of the
    noise order: with the same kept units in another noise order its loss changes,
    while this project's (which places every token at its own unit) cannot."""
    published = SWIN['swin-base-w7']
    shuffled = noise_keeping_shuffled(mask, torch.Generator().manual_seed(7))
    with torch.no_grad():
        in_order = published_swin(official, published, images, noise, 'b981012')
        misplaced = published_swin(official, published, images, shuffled, 'b981012')
    model = build_pretrain_model('swin-base-w7', published)
    model.load_state_dict(convert_official_state_dict(official, 'greenmim-2023'))
    actual = converted(model, images, mask)
    assert_same(actual, in_order)
    assert loss_difference(actual, misplaced) > 2 * RTOL  # beyond the equality tolerance
    assert prediction_difference(actual, misplaced) > 1e-3


def test_decoder_positions_are_the_published_table():
    """GreenMIMDecoder's fixed positions must be MAE's table for the losses to agree."""
    model = build_pretrain_model('swin-base-w7', SWIN['swin-base-w7'])
    expected = torch.from_numpy(mae_pos_embed(512, 7)).float()[None]
    actual = model.neck.position_embedding((7, 7), torch.zeros(()))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------- layouts
def test_merge_permutation_matches_unfold():
    """Source channel ``slot * C + c`` lands at mmcv's ``c * 4 + kh * 2 + kw``."""
    channels = 3
    x = torch.randn(1, channels, 2, 2)  # one 2x2 block
    unfold = F.unfold(x, 2, stride=2)[0, :, 0]  # c * 4 + kh * 2 + kw
    row_first = torch.cat([x[0, :, 0, 0], x[0, :, 0, 1], x[0, :, 1, 0], x[0, :, 1, 1]])
    column_first = torch.cat([x[0, :, 0, 0], x[0, :, 1, 0], x[0, :, 0, 1], x[0, :, 1, 1]])
    weight = torch.randn(5, 4 * channels)  # a reduction over the source layout
    for layout, concat in (('greenmim-2022', row_first), ('greenmim', row_first),
                           ('greenmim-2023', column_first), ('swin', column_first)):
        converted = merge_weight_to_unfold(weight, layout)
        torch.testing.assert_close(converted @ unfold, weight @ concat)


def test_conversion_reports_the_layout_it_applied(official):
    assert convert_official(official).merge_layout == 'greenmim-2022'
    assert convert_official(official, 'greenmim').merge_layout == 'greenmim-2022'
    assert convert_official(official, 'swin').merge_layout == 'swin'
    with pytest.raises(OfficialCheckpointError, match="unknown patch merging layout 'x'"):
        convert_official(official, 'x')


# --------------------------------------------------------------- bad state dicts
def error_of(state_dict, layout=None) -> str:
    with pytest.raises(OfficialCheckpointError) as info:
        convert_official_state_dict(state_dict, layout)
    message = str(info.value)
    assert '\n' not in message
    return message


def test_unknown_and_missing_keys_are_listed_in_one_line(official):
    bad = {k: v for k, v in official.items()
           if k not in ('encoder.layers.1.blocks.0.mlp.fc2.bias', 'decoder_norm.weight')}
    bad['encoder.layers.0.blocks.0.attn.extra_scale'] = torch.ones(1)
    bad['head.weight'] = torch.ones(1)
    message = error_of(bad)
    assert message.startswith('not a published GreenMIM Swin checkpoint')
    assert '4 stages of depths [2, 2, 2, 2], 1 decoder block(s)' in message
    for key in ('encoder.layers.0.blocks.0.attn.extra_scale', 'head.weight',
                'encoder.layers.1.blocks.0.mlp.fc2.bias', 'decoder_norm.weight'):
        assert key in message
    assert '2 unknown keys' in message and '2 missing keys' in message


def test_a_missing_middle_block_is_reported(official):
    bad = {k: v for k, v in official.items()
           if not k.startswith('encoder.layers.2.blocks.0.')}
    message = error_of(bad)
    assert 'missing keys: encoder.layers.2.blocks.0.*' in message


def test_learned_decoder_positions_are_refused(official):
    bad = dict(official, decoder_pos_embed=torch.randn_like(official['decoder_pos_embed']))
    assert 'not the fixed 2-D sin-cos table of a 7x7 grid' in error_of(bad)


@pytest.mark.parametrize('key, shape, expected', [
    ('decoder_pred.weight', (16 * 16 * 3, 512), 'expected (3072, 512): 3 x 32 x 32 pixels'),
    ('decoder_embed.weight', (512, 96), 'expected (512, 128): encoder width 128'),
])
def test_a_decoder_that_does_not_fit_the_encoder_is_refused(official, key, shape, expected):
    bad = dict(official, **{key: torch.zeros(shape)})
    message = error_of(bad)
    assert message.startswith('the decoder does not fit the encoder') and expected in message


def test_2022_identity_decoder_embed_converts_to_an_identity(official):
    """The 2022 wrapper used ``nn.Identity`` when encoder and decoder widths agree."""
    published = dataclasses.replace(SWIN['swin-base-w7'], embed_dim=64, num_heads=(2, 2, 4, 4))
    source = published_swin_state_dict(published, seed=1)
    assert published.width == 512
    del source['decoder_embed.weight'], source['decoder_embed.bias']
    converted = convert_official_state_dict(source)
    assert torch.equal(converted['neck.decoder_embed.weight'], torch.eye(512))
    assert not converted['neck.decoder_embed.bias'].any()
    half = {k: v for k, v in official.items() if k != 'decoder_embed.bias'}
    assert 'decoder_embed has a weight or a bias but not both' in error_of(half)


@pytest.mark.parametrize('keys, expected', [
    (['backbone.patch_embed.projection.weight', 'neck.mask_token'],
     'already in greenmim_mm format'),
    (['layers.0.blocks.0.norm1.weight', 'head.weight'],
     'looks like an encoder or fine-tuning checkpoint'),
    (['blocks.0.attn.qkv.weight', 'cls_token', 'decoder_pred.weight'],
     'looks like an encoder or fine-tuning checkpoint'),
    (['conv1.weight', 'fc.weight'], 'its keys are conv1.weight, fc.weight'),
    (['encoder.layers.0.blocks.0.norm1.weight', 'encoder.blocks.0.0.norm1.weight'],
     'keys of both published encoders'),
])
def test_neither_family_says_what_it_looks_like(keys, expected):
    message = error_of({key: torch.zeros(1) for key in keys})
    assert expected in message


def test_non_tensor_entries_are_refused(official):
    assert 'entries that are not tensors: epoch' in error_of(dict(official, epoch=3))


# --------------------------------------------------------------- files
def save_published(path, state_dict) -> str:
    """As the published ``main_pretrain.py`` saves it: training arguments included."""
    torch.save(dict(model=state_dict, optimizer={}, epoch=799, scaler={'scale': 1024.0},
                    args=argparse.Namespace(mask_ratio=0.75, model='green_mim_swin')),
               path)
    return str(path)


def test_file_conversion_writes_an_mmengine_checkpoint(official, tmp_path):
    """What the tool runs; ``load_from`` (mmengine's ``load_checkpoint``) reads it into
    the pretraining model strictly."""
    src = save_published(tmp_path / 'checkpoint-799.pth', official)
    dst = tmp_path / 'out' / 'converted.pth'
    conversion = convert_official_checkpoint(src, str(dst))
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(saved) == {'state_dict', 'meta'}
    assert saved['meta']['family'] == 'swin'
    assert saved['meta']['merge_layout'] == 'greenmim-2022'
    model = build_pretrain_model('swin-base-w7', SWIN['swin-base-w7'])
    load_checkpoint(model, str(dst), strict=True, logger='silent')
    for key, value in conversion.state_dict.items():
        torch.testing.assert_close(model.state_dict()[key], value)
    assert sorted(p.name for p in dst.parent.iterdir()) == ['converted.pth']


TINY_CONFIG = osp.join(REPO_ROOT, 'tests', 'tools', 'configs', 'tiny_greenmim.py')
TINY_CONFIG_MODEL = PublishedSwin(  # the model of TINY_CONFIG in the published names
    img_size=64, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), window_size=2,
    decoder_embed_dim=32, decoder_num_heads=2)


def test_load_from_starts_pretraining_from_the_converted_weights(tmp_path, capsys):
    """``tools/train.py CONFIG --cfg-options load_from=DST`` (in this process): the
    Runner loads every key (mmengine prints any mismatch) and trains on."""
    src = save_published(tmp_path / 'src.pth', published_swin_state_dict(TINY_CONFIG_MODEL))
    dst = str(tmp_path / 'converted.pth')
    convert_official_checkpoint(src, dst, config=TINY_CONFIG)
    work_dir = tmp_path / 'work'
    cfg = prepare_train([TINY_CONFIG, '--work-dir', str(work_dir),
                         '--cfg-options', f'load_from={dst}'])
    train(cfg)
    output = capsys.readouterr()
    assert f'Load checkpoint from {dst}' in next(work_dir.glob('*/*.log')).read_text()
    assert 'do not match exactly' not in output.out + output.err
    assert (work_dir / 'iter_2.pth').exists()


@pytest.mark.parametrize('change, expected', [
    (dict(decoder_embed_dim=64, decoder_num_heads=4),
     'shape mismatches (converted vs configured): neck.decoder_blocks.0.attn.proj.bias '
     '(64,) vs (32,)'),
    (dict(decoder_depth=2), '12 unexpected keys: neck.decoder_blocks.1.* (12 keys)'),
    (dict(depths=(2, 2, 1, 2)), '14 missing keys: backbone.stages.2.blocks.1.* (14 keys)'),
])
def test_config_check_names_what_does_not_fit_and_writes_nothing(tmp_path, change,
                                                                 expected):
    """``--config``: a checkpoint that converts but does not fit the config (which
    a training run would only find when it loads it) stops before DST is written."""
    published = dataclasses.replace(TINY_CONFIG_MODEL, **change)
    src = save_published(tmp_path / 'src.pth', published_swin_state_dict(published))
    dst = tmp_path / 'converted.pth'
    with pytest.raises(OfficialCheckpointError) as info:
        convert_official_checkpoint(src, str(dst), config=TINY_CONFIG)
    message = str(info.value)
    assert message.startswith(f'the converted checkpoint does not fit the model of '
                              f'{TINY_CONFIG}: ') and expected in message, message
    assert not dst.exists()


def write_bytes(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


class Unknown:  # a class torch's safe unpickler refuses
    pass


@pytest.mark.parametrize('make, expected', [
    (lambda d: str(d / 'nope.pth'), 'nope.pth does not exist'),
    (lambda d: str(d), 'is a directory, not a checkpoint file'),
    (lambda d: write_bytes(d / 'empty.pth', b''), 'is not a PyTorch checkpoint'),
    (lambda d: write_bytes(d / 'notes.txt', b'a text file\n'), 'is not a PyTorch checkpoint'),
    (lambda d: write_bytes(d / 'list.pth', pickle.dumps([1, 2])), 'is not a PyTorch'),
    (lambda d: torch.save([torch.ones(1)], d / 'list.pt') or str(d / 'list.pt'),
     'holds a list, not a checkpoint dict'),
    (lambda d: torch.save({'epoch': 3}, d / 'meta.pt') or str(d / 'meta.pt'),
     "has no state dict: expected a 'model' entry"),
    (lambda d: torch.save({'model': {'x': Unknown()}}, d / 'obj.pt') or str(d / 'obj.pt'),
     'pickles a test_convert_official.Unknown, which torch.load(weights_only=True) '
     'refuses; if you trust the file, re-save'),
])
def test_a_file_that_is_not_a_checkpoint_is_one_line_and_writes_nothing(tmp_path, make,
                                                                         expected):
    folder = tmp_path / 'in'
    folder.mkdir()
    src = make(folder)
    dst = tmp_path / 'converted.pth'
    with pytest.raises(UsageError) as info:
        convert_official_checkpoint(src, str(dst))
    assert expected in str(info.value) and '\n' not in str(info.value)
    assert not dst.exists()


def test_bad_keys_write_nothing_and_name_the_source(official, tmp_path):
    bad = dict(official, **{'encoder.head.weight': torch.ones(1)})
    src = save_published(tmp_path / 'bad.pth', bad)
    with pytest.raises(OfficialCheckpointError, match=r'bad\.pth: not a published .*'
                       r'encoder\.head\.weight'):
        convert_official_checkpoint(src, str(tmp_path / 'converted.pth'))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bad.pth']


def test_a_failed_write_keeps_the_old_destination(official, tmp_path):
    """DST is replaced in one rename: a write that fails half-way leaves the previous
    file as it was and no temporary file behind."""
    src = save_published(tmp_path / 'src.pth', official)
    dst = tmp_path / 'converted.pth'
    dst.write_bytes(b'previous')

    def failing_save(obj, path):
        with open(path, 'wb') as handle:
            handle.write(b'half')
        raise OSError(28, 'No space left on device')

    with mock.patch('torch.save', failing_save), \
            pytest.raises(OfficialCheckpointError, match='cannot write .*No space left'):
        convert_official_checkpoint(src, str(dst))
    assert dst.read_bytes() == b'previous'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['converted.pth', 'src.pth']
    with pytest.raises(OfficialCheckpointError, match='is the source checkpoint'):
        convert_official_checkpoint(src, src)


# --------------------------------------------------------------- the tool
def load_tool():
    path = osp.join(REPO_ROOT, 'tools', 'model_converters', 'greenmim_official_to_mm.py')
    spec = importlib.util.spec_from_file_location('greenmim_official_to_mm', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_prints_the_family_and_the_layout_it_applied(official, tmp_path, capsys):
    tool = load_tool()
    src = save_published(tmp_path / 'src.pth', official)
    tool.main([src, str(tmp_path / 'a.pth')])
    out = capsys.readouterr().out
    assert ('a published GreenMIM Swin checkpoint (4 stages of depths [2, 2, 2, 2], '
            '1 decoder block(s))') in out
    assert "patch merging: layout 'greenmim-2022' applied (row-first 2x2 concat" in out
    tool.main([src, str(tmp_path / 'b.pth'), '--merge-order', 'greenmim-2023'])
    assert "layout 'greenmim-2023' applied (Swin's column-first" in capsys.readouterr().out
    tiny = save_published(tmp_path / 'tiny.pth', published_swin_state_dict(TINY_CONFIG_MODEL))
    tool.main([tiny, str(tmp_path / 'c.pth'), '--config', TINY_CONFIG])
    assert f'fits the model of {TINY_CONFIG} (every key and shape)' in capsys.readouterr().out


def test_tool_error_is_one_line_with_exit_code_2(official, tmp_path, capsys):
    """A checkpoint that converts to nothing: ``error: SRC: <what differs>`` (the
    project's tool convention, :mod:`greenmim_cli.exits`), nothing written.
    (``tests/tools/test_bad_input.py`` runs the script's missing and non-checkpoint
    files.)"""
    src = save_published(tmp_path / 'bad.pth', dict(official, extra=torch.ones(1)))
    dst = tmp_path / 'converted.pth'
    with pytest.raises(SystemExit) as info:
        run_tool(lambda: load_tool().main([src, str(dst)]))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {src}: not a published GreenMIM Swin checkpoint')
    assert err.count('\n') == 1 and '1 unknown key: extra' in err
    assert not dst.exists()
