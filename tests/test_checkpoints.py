"""Checkpoints: atomic files, weights-only loads, lineage, and names that cannot escape."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import torch

from db import checkpoints as rows
from engine import checkpoints
from engine.pool import ModelPool
from tests.conftest import ROOT


def test_first_start_creates_one_active_default_model(database):
    cid = checkpoints.ensure_default(database)
    assert checkpoints.ensure_default(database) == cid
    row = rows.active(database)
    assert row.id == cid and row.parent_id is None and rows.count(database) == 1
    cfg, state, _ = checkpoints.load(database, cid)
    assert cfg.receptive_field == 127 and "inp.weight" in state


def test_saved_child_keeps_lineage_metrics_and_loads_weights_only(database):
    pool = ModelPool(database)
    runner = pool.get()
    with torch.no_grad():
        next(runner.model.parameters()).add_(1.0)
    child = pool.save(
        runner, name="tuned", created_by="ana", metrics={"val_accuracy": 0.6}, activate=True
    )
    row = rows.get(database, child)
    assert (row.parent_id, row.created_by, row.metrics["val_accuracy"]) == (
        runner.checkpoint_id,
        "ana",
        0.6,
    )
    assert rows.active(database).id == child
    _, state, _ = checkpoints.load(database, child)
    assert torch.equal(state["inp.weight"], runner.model.state_dict()["inp.weight"])
    payload = torch.load(checkpoints.resolve(row.file), weights_only=True)  # no pickled code
    assert set(payload) >= {"config", "model", "optimizer", "feature_version"}


def test_a_hostile_name_never_becomes_a_path_outside_the_folder(database, home):
    pool = ModelPool(database)
    cid = pool.save(pool.get(), name="../../../etc/passwd", created_by="x")
    path = checkpoints.resolve(rows.get(database, cid).file)
    assert path.parent == (home / "checkpoints").resolve()
    assert not (home.parent / "etc").exists()


WRITER = """
import sys, torch
from pathlib import Path
from engine.checkpoints import write_atomic
path = Path(sys.argv[1])
i = 0
while True:
    i += 1
    write_atomic(path, {"i": i, "weights": torch.full((400_000,), float(i))})
    print(i, flush=True)
"""


def test_killing_a_process_mid_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "model.pt"
    for delay in (0.3, 0.55, 0.8):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        proc.stdout.readline()  # at least one save completed
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        payload = checkpoints.read(path)
        assert torch.equal(payload["weights"], torch.full((400_000,), float(payload["i"])))
