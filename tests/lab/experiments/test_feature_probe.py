"""The frozen-feature probes: right on data whose answer is known, and the encoder
holds exactly the checkpoint's backbone weights (or refuses a checkpoint it cannot use)."""
import pytest
import torch

from greenmim_lab.experiments.feature_probe import (build_encoder, knn_top1,
                                                   linear_top1, probe_table,
                                                   ProbeResult, stage_features)

BACKBONE = dict(arch=dict(embed_dims=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1]),
                img_size=64, window_size=2)


def test_knn_votes_by_cosine_neighbours():
    train = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    # by direction, not length: (10, 1) is near class 0, (0, 0.2) near class 1
    test = torch.tensor([[10.0, 1.0], [0.0, 0.2], [-5.0, 0.1]])
    assert knn_top1(train, labels, test, torch.tensor([0, 1, 2]), k=1) == 1.0
    # k=2: the second neighbour of (-5, 0.1) is of class 1 (0.1, 3) or 0; tie -> smaller
    assert knn_top1(train, labels, test, torch.tensor([0, 1, 2]), k=2) == pytest.approx(2 / 3)
    assert knn_top1(train, labels, test, torch.tensor([1, 0, 0]), k=1) == 0.0


def test_linear_probe_separates_what_is_separable_only():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 16, generator=generator)
    direction = torch.randn(16, generator=generator)
    labels = (features @ direction > 0).long()  # a linear rule
    assert linear_top1(features[:300], labels[:300], features[300:], labels[300:]) > 0.9
    noise = torch.randint(0, 2, (400, ), generator=generator)  # nothing to learn
    assert abs(linear_top1(features[:300], noise[:300], features[300:], noise[300:])
               - 0.5) < 0.15


def test_encoder_holds_the_checkpoints_backbone_weights(tmp_path):
    source = build_encoder(BACKBONE, None, seed=1)
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()
             if not k.startswith(('norm0.', 'norm1.', 'norm2.'))}
    state['backbone.mask_token'] = torch.zeros(1, 1, 8)  # SimMIM's: left out
    state['neck.decoder.weight'] = torch.zeros(3)  # not the backbone's: ignored
    torch.save(dict(state_dict=state), tmp_path / 'ckpt.pth')
    loaded = build_encoder(BACKBONE, str(tmp_path / 'ckpt.pth'), seed=2)
    for key, value in state.items():
        if key.startswith('backbone.') and key != 'backbone.mask_token':
            assert torch.equal(loaded.state_dict()[key[len('backbone.'):]], value), key
    images = torch.randn(3, 3, 64, 64)
    features = stage_features(loaded, images, batch_size=2)
    assert [f.shape for f in features] == [(3, 8), (3, 16), (3, 32), (3, 64)]
    expected = stage_features(source, images)  # another batch size: float rounding only
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(features, expected))

    del state['backbone.stages.0.blocks.0.attn.w_msa.qkv.weight']
    torch.save(dict(state_dict=state), tmp_path / 'partial.pth')
    with pytest.raises(KeyError, match='stages.0.blocks.0.attn.w_msa.qkv.weight'):
        build_encoder(BACKBONE, str(tmp_path / 'partial.pth'))


def test_probe_table_rows():
    table = probe_table({'random': [ProbeResult([0.1] * 4, [0.2] * 4),
                                    ProbeResult([0.3] * 4, [0.2] * 4)],
                         'greenmim': [ProbeResult([0.5, 0.6, 0.7, 0.8], [0.4] * 4)]})
    rows = table.splitlines()
    assert rows[2] == ('| random | k-NN (k=20) | 0.200 +- 0.141 | 0.200 +- 0.141 | '
                       '0.200 +- 0.141 | 0.200 +- 0.141 |')
    assert rows[4] == '| greenmim | k-NN (k=20) | 0.500 | 0.600 | 0.700 | 0.800 |'
