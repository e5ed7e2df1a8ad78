"""A batch job's forward and backward passes run in a step worker process (engine.step_worker):
the same weights as a step here, a worker that dies costs no step, and a worker never outlives
its engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from engine import step_worker
from engine.runner import ModelRunner
from tests.test_training import SMALL, random_batch

ROOT = Path(__file__).resolve().parent.parent


def _same_weights(a: ModelRunner, b: ModelRunner) -> None:
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_a_batch_jobs_step_runs_in_a_worker_process_and_gives_the_weights_of_a_step_here():
    here, there = ModelRunner("here", SMALL), ModelRunner("there", SMALL)
    for i in range(3):
        batch = random_batch(i, SMALL, b=4, t=80)
        a = here.train_step(batch, operation="t", source="batch")  # this thread
        b = there.train_step(batch, operation="t", source="batch", spare_cores=True)
        assert abs(a.loss - b.loss) < 1e-5
        assert a.accuracy == b.accuracy and a.step == b.step
    _same_weights(here, there)
    pids = step_worker.shared.pids()
    assert pids and os.getpid() not in pids  # the work went to another process
    assert there.snapshot.step == 3  # published here, as ever


def test_a_worker_killed_before_or_during_a_step_costs_no_step(monkeypatch):
    here, there = ModelRunner("here", SMALL), ModelRunner("there", SMALL)
    there.train_step(random_batch(0, SMALL), operation="t", source="batch", spare_cores=True)
    here.train_step(random_batch(0, SMALL), operation="t", source="batch")
    for pid in step_worker.shared.pids():  # killed while idle: a fresh one takes the next step
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    there.train_step(random_batch(1, SMALL), operation="t", source="batch", spare_cores=True)
    here.train_step(random_batch(1, SMALL), operation="t", source="batch")
    fresh = step_worker.shared.pids()
    assert fresh and all(os.kill(pid, 0) is None for pid in fresh)

    ask = step_worker._Worker.ask

    def killed_mid_step(worker, request):
        worker.conn.send(request)
        os.kill(worker.process.pid, signal.SIGKILL)
        return ask(worker, request)  # its reply never comes

    monkeypatch.setattr(step_worker._Worker, "ask", killed_mid_step)
    monkeypatch.setattr(step_worker.shared, "_retry_at", 0.0)
    there.train_step(random_batch(2, SMALL), operation="t", source="batch", spare_cores=True)
    here.train_step(random_batch(2, SMALL), operation="t", source="batch")
    _same_weights(here, there)  # the step ran here instead, once
    assert there.steps == here.steps == 3
    monkeypatch.setattr(step_worker.shared, "_retry_at", 0.0)  # the next test tries again


def test_a_worker_ends_when_its_engine_is_killed():
    engine = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom engine import step_worker\n"
         "step_worker.shared.prestart(); step_worker.shared._starting.join()\n"
         "print(*step_worker.shared.pids(), flush=True); time.sleep(120)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        worker = int(engine.stdout.readline())
    finally:
        engine.kill()
        engine.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(worker):
        time.sleep(0.1)
    assert not _running(worker)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; its reaper is not the test's business
