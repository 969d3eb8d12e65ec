"""``tools/dist_train.sh`` (2 CPU processes over gloo) and ``tools/test.py`` on the tiny
classification config, end to end in subprocesses. (``--resume``, with the restored
tensors compared, is tested on GreenMIM in ``test_dist_greenmim.py``.)"""
import os.path as osp
import pickle
import re

import torch
from helpers import run_log


def _top1(output: str) -> float:
    """The last ``accuracy/top1`` a run logged."""
    values = re.findall(r'accuracy/top1: ([\d.]+)', output)
    assert values, 'no accuracy/top1 in the output'
    return float(values[-1])


def test_dist_train_writes_checkpoints(tiny_cls_run):
    result, work_dir = tiny_cls_run['result'], tiny_cls_run['work_dir']
    assert result.returncode == 0, result.describe()
    output = result.output
    assert 'x 2 processes on cpu' in output  # the header's data line
    log = run_log(work_dir)  # the environment report goes to the log file
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # the world size, whatever the device
    assert 'Iter(train) [4/4]' in output
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(work_dir, 'iter_4.pth')


def test_runner_checkpoint_loads_with_weights_only(tiny_cls_run):
    """torch >= 2.6 loads with ``weights_only=True`` by default; ``import greenmim_mm``
    lets it read everything mmengine's Runner saves, message hub included."""
    import greenmim_mm  # noqa: F401
    from mmengine.logging import HistoryBuffer

    checkpoint = torch.load(osp.join(tiny_cls_run['work_dir'], 'iter_4.pth'),
                            map_location='cpu', weights_only=True)
    assert checkpoint['meta']['iter'] == 4
    assert set(checkpoint) >= {'state_dict', 'optimizer', 'message_hub',
                               'param_schedulers'}
    assert not any(key.startswith('module.') for key in checkpoint['state_dict'])
    loss = checkpoint['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer)
    assert loss.mean() > 0  # the statistics methods work after unpickling


def test_test_tool_evaluates_checkpoint(run_tool, tiny_cls_run, tmp_path):
    """``tools/test.py`` loads the weights (``load_from``): it reproduces the accuracy
    the distributed run measured with them, and ``--out`` dumps every prediction."""
    checkpoint = osp.join(tiny_cls_run['work_dir'], 'iter_4.pth')
    out_file = str(tmp_path / 'predictions.pkl')
    result = run_tool(['tools/test.py', tiny_cls_run['config'], checkpoint,
                       '--work-dir', str(tmp_path / 'test'), '--out', out_file],
                      env=tiny_cls_run['env'])
    assert result.returncode == 0, result.describe()
    assert 'Load checkpoint from' in result.output
    assert _top1(result.output) == _top1(tiny_cls_run['result'].output)
    with open(out_file, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 16 and 'pred_score' in predictions[0]
