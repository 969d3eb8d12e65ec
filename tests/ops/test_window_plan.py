"""The window plan: attention windows of ShiftWindowMSA, slots, static shapes."""
import itertools

import pytest
import torch
from helpers import layout_coords, random_masks

from greenmim_mm.ops.masking import stage_token_coords
from greenmim_mm.ops.window_plan import plan_window_groups


# ----------------------------------------------------------------------------------
# plan_window_groups
# ----------------------------------------------------------------------------------
def stock_window_labels(batch, hw, ws, shift):
    """(B, H, W) attention-window label and (H, W) position, the stock way.

    Pad to multiples of ws, roll by -shift, partition into windows, and label the
    shift regions with ShiftWindowMSA.get_attn_mask's slices.
    """
    height, width = hw
    hp, wp = -(-height // ws) * ws, -(-width // ws) * ws
    cells = torch.arange(hp * wp, dtype=torch.float64).view(1, hp, wp, 1)
    region = torch.zeros(1, hp, wp, 1, dtype=torch.float64)
    if shift:
        slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
        for cnt, (h, w) in enumerate(itertools.product(slices, slices)):
            region[:, h, w, :] = cnt
        cells = torch.roll(cells, (-shift, -shift), (1, 2))
    # rolled map -> windows
    windows = cells.view(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3)
    windows = windows.reshape(-1, ws * ws).long()  # nW, ws2: original cell
    window_of = torch.empty(hp * wp, dtype=torch.long)
    pos_of = torch.empty(hp * wp, dtype=torch.long)
    window_of[windows.reshape(-1)] = torch.arange(windows.shape[0]).repeat_interleave(
        ws * ws)
    pos_of[windows.reshape(-1)] = torch.arange(ws * ws).repeat(windows.shape[0])
    # region label of a cell: get_attn_mask labels rolled positions
    region_rolled = region.view(hp, wp)
    rolled_cell = torch.roll(torch.arange(hp * wp).view(hp, wp), (-shift, -shift),
                             (0, 1))
    region_of = torch.empty(hp * wp, dtype=torch.long)
    region_of[rolled_cell.reshape(-1)] = region_rolled.reshape(-1).long()
    label = window_of * 9 + region_of
    label = label.view(hp, wp)[:height, :width]
    pos = pos_of.view(hp, wp)[:height, :width]
    sample = torch.arange(batch).view(-1, 1, 1) * label.numel() * 9
    return sample + label, pos


def random_coords(batch, image_hw, stride, ratio, seed):
    grid = (image_hw[0] // 32, image_hw[1] // 32)
    num_visible = max(1, int(grid[0] * grid[1] * (1 - ratio)))
    mask = random_masks(batch, grid, num_visible, seed)
    hw = (image_hw[0] // stride, image_hw[1] // stride)
    return stage_token_coords(mask, hw), hw


@pytest.mark.parametrize('image_hw,stride,ws,shift', [
    ((224, 224), 4, 7, 0), ((224, 224), 4, 7, 3), ((192, 192), 4, 7, 3),
    ((320, 224), 8, 7, 3), ((256, 256), 8, 14, 7), ((224, 224), 8, 14, 0),
    ((224, 224), 8, 7, 2)])
def test_window_plan_matches_stock_windows(image_hw, stride, ws, shift):
    batch = 3
    coords, hw = random_coords(batch, image_hw, stride, 0.6, seed=ws + shift)
    plan = plan_window_groups(coords, hw, ws, shift)
    num = batch * coords.shape[1]
    g = plan.group_size
    # token_slot is a injection into the buffer; padding elsewhere
    assert plan.token_slot.unique().numel() == num
    assert plan.padding == plan.num_groups * g - num
    assert int((plan.slot_window >= 0).sum()) == num
    # slots agree with the stock window / region / position of every token
    label, pos = stock_window_labels(batch, hw, ws, shift)
    b = torch.arange(batch).repeat_interleave(coords.shape[1])
    r, c = coords[..., 0].reshape(-1), coords[..., 1].reshape(-1)
    token_label = label[b, r, c]
    token_window = plan.slot_window.view(-1)[plan.token_slot]
    pairs = torch.stack([token_label, token_window], 1).unique(dim=0)
    assert pairs[:, 0].unique().numel() == pairs.shape[0]  # label -> one window id
    assert pairs[:, 1].unique().numel() == pairs.shape[0]  # window id -> one label
    assert torch.equal(plan.slot_pos.view(-1)[plan.token_slot], pos[r, c])
    # a window never straddles two groups
    group_of = plan.token_slot // g
    window_group = torch.stack([token_window, group_of], 1).unique(dim=0)
    assert window_group.shape[0] == token_window.unique().numel()


def test_window_plan_is_order_independent():
    coords, hw = random_coords(2, (224, 224), 4, 0.75, seed=5)
    plan = plan_window_groups(coords, hw, 7, 3)
    perm = torch.randperm(coords.shape[1], generator=torch.Generator().manual_seed(0))
    shuffled = plan_window_groups(coords[:, perm], hw, 7, 3)
    assert (plan.group_size, plan.num_groups) == (shuffled.group_size,
                                                  shuffled.num_groups)
    token = plan.token_slot.view(2, -1)[:, perm].reshape(-1)
    assert torch.equal(plan.slot_window.view(-1)[token],
                       shuffled.slot_window.view(-1)[shuffled.token_slot])


def test_whole_map_in_one_window_needs_no_grouping():
    # Swin-B stage 4 at 224 px: a 7x7 map, window 7, shift forced to 0.
    coords, hw = random_coords(4, (224, 224), 32, 0.75, seed=6)
    plan = plan_window_groups(coords, hw, 7, 0)
    assert plan.group_size == coords.shape[1] and plan.num_groups == 4
    assert plan.one_window_per_group and plan.padding == 0
    group = plan.token_slot.view(4, -1) // plan.group_size  # B, N: group of each token
    assert (group == group[:, :1]).all()  # a sample's tokens in one group
    assert group[:, 0].unique().numel() == 4  # one group per sample


def test_benchmark_setting_is_tight():
    # Swin-B, 224 px, ratio 0.75, batch 128, stages 1-2, both shifts (the bar).
    for stride, shift in itertools.product((4, 8), (0, 3)):
        coords, hw = random_coords(128, (224, 224), stride, 0.75, seed=stride + shift)
        plan = plan_window_groups(coords, hw, 7, shift)
        assert plan.padding <= 0.02 * coords.shape[0] * coords.shape[1]


def test_plan_to_device():
    """``.to`` moves every tensor of the plan (to 'meta' here, standing in for a GPU)
    and keeps the geometry; the CPU plan is left as it was."""
    coords, hw = random_coords(2, (224, 224), 8, 0.75, seed=7)
    plan = plan_window_groups(coords, hw, 7, 3)
    moved = plan.to('meta')
    for name in ('token_slot', 'slot_window', 'slot_pos'):
        assert getattr(moved, name).device.type == 'meta', name
        assert getattr(moved, name).shape == getattr(plan, name).shape, name
        assert getattr(plan, name).device.type == 'cpu', name
    assert moved.device.type == 'meta'
    assert (moved.group_size, moved.num_groups, moved.hw, moved.window_size, moved.shift,
            moved.num_windows, moved.cost) == (plan.group_size, plan.num_groups, plan.hw,
                                               plan.window_size, plan.shift,
                                               plan.num_windows, plan.cost)


@pytest.mark.parametrize('coords,hw,ws,shift,message', [
    (torch.tensor([[[0, 0], [8, 1]]]), (8, 8), 4, 0, 'must lie on the 8x8 map'),
    (torch.tensor([[[0, -1]]]), (8, 8), 4, 0, 'must lie on the 8x8 map'),
    (torch.tensor([[[1, 1], [1, 1]]]), (8, 8), 4, 0, 'distinct'),
    (torch.zeros(2, 0, 2, dtype=torch.long), (8, 8), 4, 0, 'visible set is empty'),
    (torch.zeros(1, 1, 2, dtype=torch.long), (8, 8), 4, 4, '0 <= shift < window_size'),
    (torch.zeros(1, 1, 2), (8, 8), 4, 0, 'integer'),
    (torch.zeros(1, 2), (8, 8), 4, 0, r'\(B, N, 2\)'),
])
def test_window_plan_bad_input(coords, hw, ws, shift, message):
    with pytest.raises(ValueError, match=message):
        plan_window_groups(coords, hw, ws, shift)


def test_mask_unit_must_divide_the_map():
    mask = torch.zeros(1, 7, 7, dtype=torch.bool)
    with pytest.raises(ValueError, match='mask unit must divide the feature map'):
        stage_token_coords(mask, (48, 48))
    with pytest.raises(ValueError, match='power of 2'):
        stage_token_coords(mask, (42, 42))
    assert torch.equal(stage_token_coords(mask, (56, 56)), layout_coords(mask, 8))
