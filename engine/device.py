"""Where training and a backtest's model pass run: CUDA or Apple MPS when present, else the CPU
(CANDLELAB_DEVICE forces one, e.g. `cpu`). Live inference always runs on the CPU: one candle is too small a job to be
worth a transfer, and the CPU keeps latency steady."""

from __future__ import annotations

import os

import torch


def training_device() -> torch.device:
    forced = os.environ.get("CANDLELAB_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
