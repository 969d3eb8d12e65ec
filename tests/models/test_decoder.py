"""GreenMIMDecoder: tokens land on their units, any grid, samples independent."""
import numpy as np
import pytest
import torch
from helpers import random_masks
from mmpretrain.registry import MODELS

import greenmim_mm  # noqa: F401  (registers the decoder)
from greenmim_mm.models.necks.greenmim_decoder import unit_position_embedding
from greenmim_mm.ops.masking import visible_unit_ids

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def build(depth: int = 1, unit: int = 8, seed: int = 0):
    torch.manual_seed(seed)
    decoder = MODELS.build(dict(
        type='GreenMIMDecoder', patch_size=unit, embed_dim=24, decoder_embed_dim=16,
        decoder_depth=depth, decoder_num_heads=2))
    decoder.init_weights()
    return decoder.eval()


@pytest.mark.parametrize('grid', [(7, 7), (2, 3), (4, 1)])
def test_shapes_square_and_not(grid):
    decoder = build(unit=8)
    mask = random_masks(3, grid, num_visible=2)
    pred = decoder(torch.randn(3, 2, 24), mask)
    assert pred.shape == (3, grid[0] * grid[1], 8 * 8 * 3)


@pytest.mark.parametrize('grid', [(2, 3), (4, 4)])
def test_positions_follow_the_grid(grid):
    """Unit (r, c) gets [sin(c w), cos(c w), sin(r w), cos(r w)], row-major: on a
    square grid, MAE's table; on any grid, the geometry of that grid."""
    decoder = build()
    pos = decoder.position_embedding(grid, torch.zeros(()))[0]  # Hu*Wu, 16
    omega = 10000.0**(-np.arange(4) / 4)
    for unit in range(grid[0] * grid[1]):
        row, col = divmod(unit, grid[1])
        expected = np.concatenate([np.sin(col * omega), np.cos(col * omega),
                                   np.sin(row * omega), np.cos(row * omega)])
        np.testing.assert_allclose(pos[unit].numpy(), expected, atol=1e-6)
    assert not hasattr(decoder, 'decoder_pos_embed')  # no fixed square table


def test_token_i_lands_on_visible_unit_i():
    """Without blocks every output is a function of its own slot: exact placement."""
    decoder = build(depth=0)
    mask = random_masks(2, (3, 4), num_visible=5, seed=1)
    latent = torch.randn(2, 5, 24)
    pred = decoder(latent, mask)
    pos = unit_position_embedding((3, 4), 16)[0]  # 12, 16

    def head(tokens):
        return decoder.decoder_pred(decoder.decoder_norm(tokens))

    for b in range(2):
        ids = visible_unit_ids(mask[b:b + 1])[0]
        for i, unit in enumerate(ids.tolist()):
            expected = head(decoder.decoder_embed(latent[b, i]) + pos[unit])
            torch.testing.assert_close(pred[b, unit], expected)
        for unit in torch.nonzero(mask[b].flatten())[:, 0].tolist():
            expected = head(decoder.mask_token[0, 0] + pos[unit])
            torch.testing.assert_close(pred[b, unit], expected)


def test_samples_are_independent_with_per_sample_masks():
    decoder = build(depth=2)
    mask = random_masks(4, (3, 3), num_visible=3, seed=2)
    latent = torch.randn(4, 3, 24)
    batched = decoder(latent, mask)
    for b in range(4):
        alone = decoder(latent[b:b + 1], mask[b:b + 1])
        torch.testing.assert_close(batched[b:b + 1], alone, rtol=1e-5, atol=1e-5)


def test_output_depends_on_placement():
    """The same tokens under another mask give another prediction (positions matter)."""
    decoder = build(depth=1)
    latent = torch.randn(1, 2, 24)
    first = decoder(latent, random_masks(1, (2, 2), 2, seed=0))
    second = decoder(latent, random_masks(1, (2, 2), 2, seed=3))
    assert not torch.allclose(first, second)


def test_gradients_reach_every_parameter():
    decoder = build(depth=1).train()
    mask = random_masks(2, (2, 3), num_visible=2)
    decoder(torch.randn(2, 2, 24), mask).square().mean().backward()
    missing = [name for name, p in decoder.named_parameters() if p.grad is None]
    assert not missing


def test_token_count_must_match_the_mask():
    decoder = build()
    mask = random_masks(2, (2, 2), num_visible=2)
    with pytest.raises(ValueError, match='The mask has 2 visible units per sample but '
                       'the encoder returned 3 tokens'):
        decoder(torch.randn(2, 3, 24), mask)


def test_width_must_be_a_multiple_of_4():
    with pytest.raises(ValueError, match='decoder width must be a multiple of 4, got 18'):
        unit_position_embedding((2, 2), 18)


def test_num_patches_is_rejected():
    with pytest.raises(TypeError, match='takes the unit grid from the mask: remove '
                       'num_patches'):
        MODELS.build(dict(type='GreenMIMDecoder', num_patches=49))
