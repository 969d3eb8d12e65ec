"""Pure-PyTorch kernels of the visible-only path (no registries, no mmpretrain)."""
from .group_attention import BACKENDS as ATTENTION_BACKENDS
from .group_attention import attention_layout, group_window_attention
from .grouping import GroupPlan, group_capacity, group_cost, plan_groups
from .masking import (check_unit_mask, gather_tokens, morton_offsets,
                      num_visible_units, random_unit_masks, scatter_tokens,
                      stage_token_coords, unit_grid, unit_token_coords,
                      visible_token_coords, visible_unit_ids)
from .visible_plan import (PackedVisiblePlan, StageGeometry, StagePlan, VisibleGeometry,
                           VisiblePlan, build_visible_plan, pack_visible_plan)
from .window_plan import (PackedWindowPlan, WindowGroupPlan, max_window_count,
                          pack_window_groups, plan_window_groups)

__all__ = [
    'ATTENTION_BACKENDS', 'GroupPlan', 'PackedVisiblePlan', 'PackedWindowPlan',
    'StageGeometry', 'StagePlan', 'VisibleGeometry',
    'VisiblePlan', 'WindowGroupPlan', 'attention_layout', 'build_visible_plan',
    'check_unit_mask', 'gather_tokens', 'group_capacity', 'group_cost',
    'group_window_attention', 'max_window_count', 'morton_offsets', 'num_visible_units',
    'pack_visible_plan', 'pack_window_groups', 'plan_groups', 'plan_window_groups',
    'random_unit_masks', 'scatter_tokens', 'stage_token_coords', 'unit_grid',
    'unit_token_coords', 'visible_token_coords', 'visible_unit_ids'
]
