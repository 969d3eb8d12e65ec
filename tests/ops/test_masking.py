"""The mask convention and the token layout (greenmim_mm.ops.masking), checked against
coordinates written out by hand: visible units in row-major order, the tokens of a
unit in Z order (0, 0), (0, 1), (1, 0), (1, 1), recursively."""
import pytest
import torch
from helpers import layout_coords

from greenmim_mm.ops.masking import (check_unit_mask, gather_tokens, morton_offsets,
                                     num_visible_units, random_unit_masks,
                                     scatter_tokens, unit_grid, visible_token_coords,
                                     visible_unit_ids)

# One sample on a 2 x 3 unit grid, units (0, 2) and (1, 0) visible (True = masked).
MASK = torch.tensor([[[True, True, False], [False, True, True]]])
Z4 = [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3),
      (2, 0), (2, 1), (3, 0), (3, 1), (2, 2), (2, 3), (3, 2), (3, 3)]
MASK_COORDS = {  # tokens per unit -> the layout of MASK, by hand
    1: [(0, 2), (1, 0)],
    2: [(0, 4), (0, 5), (1, 4), (1, 5),  # unit (0, 2): rows 0-1, columns 4-5
        (2, 0), (2, 1), (3, 0), (3, 1)],  # unit (1, 0): rows 2-3, columns 0-1
    4: [(r, 8 + c) for r, c in Z4] + [(4 + r, c) for r, c in Z4],
}


def test_morton_offsets_by_hand():
    assert morton_offsets(1).tolist() == [[0, 0]]
    assert morton_offsets(2).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert [tuple(rc) for rc in morton_offsets(4).tolist()] == Z4


def test_visible_units_in_row_major_order():
    assert visible_unit_ids(MASK).tolist() == [[2, 3]]
    two = torch.stack([MASK[0], MASK[0].flip(1)])  # sample 1: units (0, 0), (1, 2)
    assert visible_unit_ids(two).tolist() == [[2, 3], [0, 5]]


@pytest.mark.parametrize('unit', [1, 2, 4])
def test_visible_token_coords_by_hand(unit):
    expected = [list(rc) for rc in MASK_COORDS[unit]]
    assert visible_token_coords(MASK, unit).tolist() == [expected]
    assert layout_coords(MASK, unit).tolist() == [expected]  # the tests' reference


def test_per_sample_layout():
    mask = torch.stack([MASK[0], torch.tensor([[False, True, True], [True, True, False]])])
    coords = visible_token_coords(mask, 2)
    assert coords[0].tolist() == [list(rc) for rc in MASK_COORDS[2]]
    assert coords[1].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1],
                                  [2, 4], [2, 5], [3, 4], [3, 5]]


@pytest.mark.parametrize('unit', [2, 4, 8])
def test_merging_2x2_blocks_is_a_reshape(unit):
    """Every 4 consecutive tokens are an aligned 2x2 block in Z order, and the blocks
    are the tokens of the next stage in its layout (what patch merging relies on)."""
    mask = random_unit_masks(3, (3, 4), 6, generator=torch.Generator().manual_seed(unit))
    blocks = visible_token_coords(mask, unit).view(3, -1, 4, 2)  # B, N/4, 4, 2
    corner = blocks[:, :, :1]
    offsets = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    assert torch.equal(blocks - corner, offsets.expand_as(blocks))
    assert bool((corner % 2 == 0).all())
    assert torch.equal(corner[:, :, 0] // 2, visible_token_coords(mask, unit // 2))


def test_gather_and_scatter_by_hand():
    dense = torch.arange(2 * 4 * 6).view(2, 4, 6, 1).float()  # value = b*24 + r*6 + c
    coords = torch.tensor([[[0, 4], [3, 1]], [[1, 0], [2, 5]]])
    tokens = gather_tokens(dense, coords)
    assert tokens[..., 0].tolist() == [[4.0, 19.0], [30.0, 41.0]]
    placed = scatter_tokens(tokens, coords, (4, 6), fill=-1.0)
    assert placed.shape == (2, 4, 6, 1)
    assert placed[0, 0, 4, 0] == 4 and placed[1, 2, 5, 0] == 41
    assert int((placed == -1).sum()) == 2 * 24 - 4


def test_random_unit_masks():
    masks = random_unit_masks(500, (3, 4), 5, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (500, 3, 4) and masks.dtype == torch.bool
    assert ((~masks).flatten(1).sum(1) == 5).all()
    # per-sample masks: 500 draws of C(12, 5) = 792 masks give ~371 distinct ones
    assert len({m.numpy().tobytes() for m in masks}) > 330
    # Uniform over units: each is visible in 5/12 of the samples (+- 4.5 sd).
    frequency = (~masks).float().mean(0)
    assert (frequency - 5 / 12).abs().max() < 0.1
    again = random_unit_masks(500, (3, 4), 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)
    torch.manual_seed(1)  # no generator: torch's global one
    first = random_unit_masks(4, (3, 4), 5)
    torch.manual_seed(1)
    assert torch.equal(first, random_unit_masks(4, (3, 4), 5))
    with pytest.raises(ValueError, match=r'num_visible must lie in \[1, 12\]'):
        random_unit_masks(1, (3, 4), 13)


def test_mask_checks():
    assert check_unit_mask(MASK) == 2
    with pytest.raises(ValueError, match='bool tensor'):
        check_unit_mask(MASK.float())
    with pytest.raises(ValueError, match='bool tensor'):
        check_unit_mask(MASK[0])
    with pytest.raises(ValueError, match='hides every unit'):
        check_unit_mask(torch.ones(2, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r'same number of visible units, got \[2, 1\]'):
        check_unit_mask(torch.stack([MASK[0], torch.tensor([[False, True, True],
                                                            [True, True, True]])]))
    assert unit_grid((224, 96), 32) == (7, 3)
    with pytest.raises(ValueError, match='not divisible by the mask unit 32 px'):
        unit_grid((224, 100), 32)
    assert num_visible_units(49, 0.75) == 12
    with pytest.raises(ValueError, match='leaves no visible unit'):
        num_visible_units(4, 0.8)
    with pytest.raises(ValueError, match='power of 2'):
        morton_offsets(3)
