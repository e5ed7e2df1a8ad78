"""The model's causal contract: one pass equals live inference, and the future never leaks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from db import candles
from engine import features
from engine.inference import context_size, predict_all, predict_last
from engine.model import CandleTransformer, ModelConfig
from market.importer import seed_samples


@pytest.fixture(scope="module")
def sp500(tmp_path_factory):
    import os

    import db
    from db import connection

    home = tmp_path_factory.mktemp("sp500")
    old = os.environ.get("CANDLELAB_HOME")
    os.environ["CANDLELAB_HOME"] = str(home)
    database = db.init()
    seed_samples(database)
    df = candles.load(database, "SP500", "1d")
    connection.dispose_all()
    if old is None:
        os.environ.pop("CANDLELAB_HOME")
    else:
        os.environ["CANDLELAB_HOME"] = old
    return df[["open", "high", "low", "close", "volume"]].to_numpy()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    return CandleTransformer(ModelConfig()).eval()


def test_one_causal_pass_equals_live_inference_at_every_real_candle(sp500, model):
    probs, ghost = predict_all(model, sp500, chunk=1000)  # several chunks, to test the overlap
    worst = 0.0
    for t in range(len(sp500)):
        live = predict_last(model, sp500[: t + 1])
        worst = max(worst, float(np.abs(np.array(list(live.probs.values())) - probs[t]).max()))
        if t % 97 == 0:  # ghost candles too, as prices
            expect = sp500[t, 3] * np.exp(ghost[t].astype(np.float64) / 100)
            np.testing.assert_allclose(live.ghost, expect, rtol=1e-5)
    assert worst <= 1e-5


def test_a_pass_in_gpu_sized_chunks_on_a_named_device_gives_the_same_probabilities(sp500, model):
    """A backtest's pass (device given, GPU-sized chunks, no ghost candles) equals the default
    one; the caller's model stays where it was."""
    probs, _ = predict_all(model, sp500, chunk=1000)
    big, ghost = predict_all(model, sp500, chunk=65_536, device="cpu", ghost=False)
    assert ghost is None and big.shape == probs.shape
    np.testing.assert_allclose(big, probs, atol=1e-6)
    assert next(model.parameters()).device.type == "cpu"


def test_a_pass_whose_chunks_run_at_once_on_spare_cores_gives_the_same_probabilities(
    sp500, model, monkeypatch
):
    """With cores spare, a pass runs several chunks at once on threads of their own: the same
    numbers as one chunk after another, progress in order, and cancelling keeps what is done."""
    from engine import inference, priority

    class Always(priority.ThreadChoice):
        def pick(self, spare: int) -> int:
            return 3

    one_at_a_time, _ = predict_all(model, sp500, chunk=500)
    threads = torch.get_num_threads()
    monkeypatch.setattr(priority, "CORES", 3)
    monkeypatch.setattr(inference, "_PASS_THREADS", Always())
    seen: list[float] = []
    at_once, ghost = predict_all(model, sp500, chunk=500, progress=seen.append)
    np.testing.assert_allclose(at_once, one_at_a_time, atol=1e-6)
    np.testing.assert_allclose(ghost, predict_all(model, sp500, chunk=500)[1], atol=1e-5)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == -(-len(sp500) // 1500)
    part, _ = predict_all(model, sp500, chunk=500, progress=lambda f: False)
    assert len(part) == 1500
    np.testing.assert_allclose(part, one_at_a_time[:1500], atol=1e-6)
    assert torch.get_num_threads() == threads  # the caller's own count, given back


def test_a_pass_times_each_round_under_the_thread_count_that_ran_it(sp500, model, monkeypatch):
    """The thread choice learns from the truth: each round of chunks is recorded under the
    count it was picked with, and for the candles that round scored."""
    from engine import inference, priority

    class Spy(priority.ThreadChoice):
        picked: list[int] = []
        recorded: list[tuple[int, int]] = []

        def pick(self, spare: int) -> int:
            self.picked.append(1 + len(self.picked) % 3)
            return self.picked[-1]

        def record(self, threads: int, seconds: float, candles: int) -> None:
            self.recorded.append((threads, candles))

    monkeypatch.setattr(priority, "CORES", 3)
    monkeypatch.setattr(inference, "_PASS_THREADS", Spy())
    predict_all(model, sp500[:4000], chunk=500)
    assert Spy.picked == [1, 2, 3, 1, 2]  # 8 chunks: 1 + 2 + 3 + 1 + (the last) 1
    assert Spy.recorded == [(1, 500), (2, 1000), (3, 1500), (1, 500), (1, 500)]  # as ran


def test_changing_later_candles_never_changes_earlier_predictions(sp500, model):
    probs, _ = predict_all(model, sp500[:3000])
    shaken = sp500[:3000].copy()
    shaken[2000:, :4] *= 1.5
    shaken[2000:, 4] *= 0.1
    probs2, _ = predict_all(model, shaken)
    np.testing.assert_array_equal(probs[:2000], probs2[:2000])
    assert not np.allclose(probs[2000:2010], probs2[2000:2010])


def test_output_depends_on_exactly_the_context_window(sp500, model):
    c = context_size(model.cfg)
    assert c == model.cfg.receptive_field + features.LOOKBACK - 1
    t = 2500
    base = predict_last(model, sp500[: t + 1]).probs
    far = sp500[: t + 1].copy()
    far[: t + 1 - c] *= 3.0  # everything before the window
    assert predict_last(model, far).probs == base
    near = sp500[: t + 1].copy()
    near[t + 1 - c, :4] *= 1.3  # the oldest candle inside the window
    probs, _ = predict_all(model, near)
    assert np.abs(probs[t] - np.array(list(base.values()))).max() > 0


def test_features_are_causal_and_finite(sp500):
    f = features.compute(sp500)
    assert f.shape == (len(sp500), features.N_FEATURES) and np.isfinite(f).all()
    g = features.compute(sp500[:1000])
    np.testing.assert_array_equal(f[:1000], g)


def test_a_features_row_is_the_same_to_the_last_bit_wherever_the_computation_starts(sp500):
    """Once LOOKBACK candles of history exist: a pass computes features chunk by chunk. A long
    series with large volumes, where trailing means from cumulative sums differed in 16 rows
    of 25,000 (rounding carried from everything before)."""
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 50_000)))
    long = np.stack([close, close * 1.01, close * 0.99, close, rng.lognormal(20, 1, 50_000)], 1)
    for x in (sp500, long):
        f = features.compute(x)
        for start in (1, 19, 20, 21, 500, 3001, len(x) - 1000):
            later = features.compute(x[start:])[features.LOOKBACK - 1 :]
            np.testing.assert_array_equal(later, f[start + features.LOOKBACK - 1 :])
        for start, end in ((0, 7), (5, 30), (20, 21), (1234, 4096), (len(f) - 3, len(f))):
            np.testing.assert_array_equal(features.rows(x, start, end), f[start:end])


@pytest.mark.parametrize("length", [40, 600], ids=["dense-mask path", "banded-block path"])
def test_every_tensor_the_model_builds_follows_the_input_device(length):
    """PyTorch's meta device stands in for a GPU on a CPU-only machine: a tensor built on the
    CPU inside forward cannot mix with it, exactly as it cannot with CUDA tensors."""
    model = CandleTransformer(ModelConfig()).to("meta")
    x = torch.zeros(2, length, features.N_FEATURES, device="meta")
    logits, ghost = model(x)
    assert logits.device.type == ghost.device.type == "meta"
    assert model(x, last_only=True)[0].shape == (2, 1, 3)
    (logits.sum() + ghost.sum()).backward()
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters())


@pytest.mark.parametrize("length", [200, 700], ids=["dense-mask path", "banded-block path"])
def test_training_on_the_configured_device_matches_the_cpu(length, monkeypatch):
    """A train step on CANDLELAB_DEVICE (the CPU in CI, `cuda` on a GPU machine) gives the
    weights the same step gives on the CPU."""
    from engine.device import training_device
    from engine.runner import ModelRunner
    from tests.test_training import random_batch

    device = training_device()
    batch = random_batch(0, ModelConfig(), t=length)
    runs = []
    for where in (device, torch.device("cpu")):
        runner = ModelRunner("device-test", ModelConfig(), seed=5, device=where)
        result = runner.train_step(batch, operation="test", source="batch")
        assert np.isfinite(result.loss)
        runs.append(runner.snapshot.model.state_dict())
    for key, value in runs[0].items():
        torch.testing.assert_close(value, runs[1][key], atol=1e-4, rtol=1e-3)
