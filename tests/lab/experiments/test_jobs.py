"""run_jobs: a failed job stops the run with the end of its log."""
import pytest

from greenmim_lab.experiments.jobs import RunnerJob, run_jobs


def test_a_failed_job_raises_with_its_log(tmp_path):
    config = tmp_path / 'bad.py'
    config.write_text("model = dict(type='NoSuchModel')\nwork_dir = '%s'\n" % tmp_path)
    job = RunnerJob('bad', str(config), str(tmp_path / 'work'))
    with pytest.raises(RuntimeError, match=r'Job bad failed \(exit code 1\)') as error:
        run_jobs([job], parallel=1)
    assert 'NoSuchModel' in str(error.value)  # the end of the job's log


def test_bad_parallel():
    with pytest.raises(ValueError, match='parallel must be >= 1'):
        run_jobs([], parallel=0)
