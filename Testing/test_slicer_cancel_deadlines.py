"""Cancel's escalation waits as long as the job's steps need: a CPU fine-tune whose iteration takes a
minute must not be signalled after 15 s nor killed after 90 s, before it could write its checkpoint."""

from __future__ import annotations

import sys

import pytest

from slicer_harness import fixtures  # noqa: F401  (puts the module folder on sys.path)

# isort: split
# DTCSegmentationLib is importable once slicer_harness.fixtures has put the module folder on sys.path
from DTCSegmentationLib.jobs import enginejob as jobs  # noqa: E402
from DTCSegmentationLib.jobs.trainjob import TrainingJob, TrainingRequest  # noqa: E402


def test_deadlines_are_the_minimums_for_fast_steps_and_grow_with_slow_ones():
    assert jobs.cancel_deadlines(None) == (jobs.CANCEL_SIGNAL_AFTER_S, jobs.CANCEL_GRACE_S)
    signal_after, kill_after = jobs.cancel_deadlines(0.5)  # a GPU iteration: the minimums, or nearly
    assert signal_after == jobs.CANCEL_SIGNAL_AFTER_S and jobs.CANCEL_GRACE_S <= kill_after <= jobs.CANCEL_GRACE_S + 1
    step = 60.0  # one CPU iteration on a large patch
    signal_after, kill_after = jobs.cancel_deadlines(step)
    assert signal_after >= jobs.STEPS_BEFORE_SIGNAL * step  # the cancel file had two iterations to work
    assert kill_after >= signal_after + step + jobs.CHECKPOINT_WRITE_S  # one more step, then the checkpoint
    assert jobs.cancel_deadlines(2 * step)[1] > kill_after


class _SleepingTrainingJob(TrainingJob):
    """A real TrainingJob whose process is a sleeper: only the escalation delays are under test."""

    def command(self, python=None):
        return [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def sleeping_job(tmp_path):
    job = _SleepingTrainingJob(TrainingRequest(tmp_path / "manifest.json", tmp_path / "run"))
    job.start()
    yield job
    job.runner.kill_tree()
    job.runner.process.wait(10)


def _progress(iteration: int, elapsed_s: float) -> dict:
    return {"event": "progress", "iteration": iteration, "total": 1000, "elapsed_s": elapsed_s,
            "losses": {"total": 0.5}}


def test_a_training_job_cancels_with_deadlines_from_its_measured_iteration_time(sleeping_job):
    job = sleeping_job
    assert job.step_s is None
    job.on_event(_progress(10, 100.0))  # the first event includes start-up time: it only sets the origin
    assert job.step_s is None
    job.on_event(_progress(12, 180.0))
    assert job.step_s == pytest.approx(40.0)
    job.cancel()
    assert job.cancel_file.exists()
    assert (job.runner.signal_after_s, job.runner.grace_s) == jobs.cancel_deadlines(40.0)
    assert job.runner.signal_after_s > jobs.CANCEL_SIGNAL_AFTER_S


def test_a_job_without_measured_steps_keeps_the_minimum_deadlines(sleeping_job):
    sleeping_job.cancel()
    assert (sleeping_job.runner.signal_after_s, sleeping_job.runner.grace_s) == (
        jobs.CANCEL_SIGNAL_AFTER_S, jobs.CANCEL_GRACE_S)
