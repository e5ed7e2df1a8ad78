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
from tests.test_training import random_batch


def test_first_start_creates_one_active_default_model(database):
    cid = checkpoints.ensure_default(database)
    assert checkpoints.ensure_default(database) == cid
    row = rows.active(database)
    assert row.id == cid and row.parent_id is None and rows.count(database) == 1
    cfg, state, _ = checkpoints.load(database, cid)
    assert cfg.receptive_field == 127 and "inp.weight" in state


def test_saved_child_keeps_lineage_sources_and_metrics_and_loads_weights_only(database):
    pool = ModelPool(database)
    model = pool.new_working(None, created_by="ana")
    base = model.base_checkpoint_id
    for i in range(3):
        model.train_step(random_batch(i, model.config), operation="test", source="manual",
                         requested_by="ana")  # fmt: skip
    child = model.save_checkpoint(
        name="tuned", created_by="ana", metrics={"val_accuracy": 0.6}, activate=True
    ).result(30)
    row = rows.get(database, child)
    assert (row.parent_id, row.created_by, row.metrics["val_accuracy"]) == (base, "ana", 0.6)
    assert row.steps == 3 and row.working_model_id == model.id
    assert row.sources["steps_by_source"] == {"manual": 3}
    assert row.sources["manual_steps_by"] == {"ana": 3}
    assert rows.active(database).id == child
    _, state, _ = checkpoints.load(database, child)
    assert torch.equal(state["inp.weight"], model.snapshot.model.state_dict()["inp.weight"])
    payload = torch.load(checkpoints.resolve(row.file), weights_only=True)  # no pickled code
    assert set(payload) >= {"config", "model", "optimizer", "feature_version"}
    model.train_step(random_batch(9, model.config), operation="test", source="manual")
    grandchild = rows.get(database, model.save_checkpoint(name="more", created_by="bo").result(30))
    assert grandchild.parent_id == child and grandchild.sources["steps"] == 1
    pool.close_all()


def test_training_never_changes_the_checkpoint_it_started_from(database):
    pool = ModelPool(database)
    base = pool.active_id()
    _, before, _ = checkpoints.load(database, base)
    model = pool.new_working(base, created_by="ana")
    for i in range(5):
        model.train_step(random_batch(i, model.config), operation="test", source="batch")
    _, after, _ = checkpoints.load(database, base)
    assert all(torch.equal(before[k], after[k]) for k in before)
    frozen = pool.frozen(base).snapshot.model.state_dict()
    assert all(torch.equal(before[k], frozen[k]) for k in before)
    assert not torch.equal(model.snapshot.model.state_dict()["inp.weight"], before["inp.weight"])
    pool.close_all()


def test_a_hostile_name_never_becomes_a_path_outside_the_folder(database, home):
    pool = ModelPool(database)
    cid = (
        pool.new_working(None, created_by="x")
        .save_checkpoint(name="../../../etc/passwd", created_by="x")
        .result(30)
    )
    path = checkpoints.resolve(rows.get(database, cid).file)
    assert path.parent == (home / "checkpoints").resolve()
    assert not (home.parent / "etc").exists()
    pool.close_all()


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
