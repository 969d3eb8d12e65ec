"""mmcv's compiled ops are really there (mmcv-lite has no ``mmcv.ops``): Mask R-CNN needs
``nms`` and ``RoIAlign`` on the CPU."""
import torch


def test_nms_runs_on_cpu():
    from mmcv.ops import nms

    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]  # box 1 overlaps box 0 with IoU 81/119 > 0.5
    assert torch.allclose(dets[:, 4], torch.tensor([0.9, 0.7]))


def test_roi_align_runs_on_cpu():
    from mmcv.ops import RoIAlign

    feature = torch.arange(16.).view(1, 1, 4, 4).requires_grad_()  # 4 * row + col
    rois = torch.tensor([[0., 0., 0., 4., 4.], [0., 1., 1., 3., 3.]])  # (batch_idx, box)
    out = RoIAlign(output_size=(2, 2), spatial_scale=1.0, sampling_ratio=2,
                   aligned=True)(feature, rois)
    assert out.shape == (2, 1, 2, 2)
    # Bilinear sampling of a linear ramp is exact: the bin centres of the whole map
    # are (0.5, 0.5)..(2.5, 2.5) in pixel-centre coordinates, i.e. values 2.5 .. 12.5.
    assert torch.allclose(out[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    out.sum().backward()  # Mask R-CNN training needs the backward too
    assert feature.grad.sum().item() == 8.0  # each output spreads weight 1 over inputs


def test_ops_extension_is_compiled():
    from mmcv.utils import ext_loader

    ext = ext_loader.load_ext('_ext', ['nms', 'roi_align_forward'])
    assert callable(ext.nms) and callable(ext.roi_align_forward)
