"""Pure-PyTorch kernels of the visible-only path (no registries, no mmpretrain)."""
from .group_attention import BACKENDS as ATTENTION_BACKENDS
from .group_attention import group_window_attention
from .grouping import (GroupPlan, WindowGroupPlan, group_cost, plan_groups,
                       plan_window_groups, stage_token_coords)
from .masking import (check_unit_mask, gather_tokens, morton_offsets,
                      num_visible_units, random_unit_masks, scatter_tokens, unit_grid,
                      visible_token_coords, visible_unit_ids)

__all__ = [
    'ATTENTION_BACKENDS', 'GroupPlan', 'WindowGroupPlan', 'check_unit_mask',
    'gather_tokens', 'group_cost', 'group_window_attention', 'morton_offsets',
    'num_visible_units', 'plan_groups', 'plan_window_groups', 'random_unit_masks',
    'scatter_tokens',
    'stage_token_coords', 'unit_grid', 'visible_token_coords', 'visible_unit_ids'
]
