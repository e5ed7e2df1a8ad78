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
