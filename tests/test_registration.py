"""``import greenmim_mm`` registers into mmpretrain's and mmdet's registries, and a
config with ``custom_imports`` builds through each scope the way the Runner does."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from mmengine.utils import import_modules_from_strings

# A 4-stage Swin of 16 channels: enough to build and run in milliseconds.
TINY_SWIN = dict(type='GreenMIMSwinTransformer',
                 arch=dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1]),
                 img_size=64, window_size=2, out_indices=(3, ))


def test_import_registers_into_both_scopes():
    import greenmim_mm  # noqa: F401
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

    assert 'GreenMIMSwinTransformer' in MMPRETRAIN_MODELS.module_dict
    assert 'GreenMIMSwinTransformer' in MMDET_MODELS.module_dict


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet'])
def test_config_builds_through_scope(scope):
    cfg = Config(dict(custom_imports=dict(imports=['greenmim_mm'],
                                          allow_failed_imports=False),
                      default_scope=scope, model=TINY_SWIN))
    # What Runner.from_cfg does: import the custom modules, set the default scope,
    # build from mmengine's root registry, which looks the type up in the scope's
    # child registry (mmpretrain.registry.MODELS or mmdet.registry.MODELS).
    import_modules_from_strings(**cfg.custom_imports)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        with MODELS.switch_scope_and_registry(cfg.default_scope) as registry:
            assert registry.scope == scope
        model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'GreenMIMSwinTransformer'
    assert type(model).__module__.startswith('greenmim_mm.')
    (out, ) = model(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 128, 2, 2)  # 16 * 2**3 channels at stride 32
