"""`python -m engine list | show | backtest` as an operator uses them: tables and JSON, one
report layout shared with the app's download, clear words for a symbol that is not stored, and
no traceback when the reader of a pipe stops early."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from contract.access import SYSTEM_ACCOUNT
from db import backtests, candles
from engine.cli import main
from tests.conftest import ROOT, run_cli

DAYS = pd.date_range("2014-01-01", "2016-12-31", freq="D", tz="UTC")  # 1,096 daily candles


@pytest.fixture
def seeded(database):
    """Two stored daily datasets, SP500 and NASDAQ, 2014 to 2016."""
    rng = np.random.default_rng(3)
    for symbol in ("SP500", "NASDAQ"):
        close = 100 * np.cumprod(1 + rng.normal(0, 0.01, len(DAYS)))
        frame = pd.DataFrame({"ts": DAYS.as_unit("ms").asi8, "open": close, "high": close * 1.01,
                              "low": close * 0.99, "close": close, "volume": 1.0})  # fmt: skip
        candles.store(database, frame, symbol=symbol, timeframe="1d", source="test",
                      sha256=symbol, format="test", rows_in_file=len(frame), rows_skipped=0,
                      created_by=SYSTEM_ACCOUNT)  # fmt: skip
    return database


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """main(ARGS) in this process: (exit status, stdout, stderr)."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def signals_file(tmp_path):
    path = tmp_path / "signals.csv"
    path.write_text("timestamp,action\n2015-01-02,BUY\n2016-01-04,SELL\n")
    return path


def test_the_cli_and_the_app_write_one_report_layout(seeded, home, tmp_path, capsys):
    """`backtest --json`, `show backtest ID --json` and the app's download (backtests.report)
    give the same report; a --no-save run has the same keys."""
    signals = signals_file(tmp_path)
    kept, loose = tmp_path / "kept.json", tmp_path / "loose.json"
    done = run_cli(home, "backtest", "--symbol", "SP500", "--timeframe", "1d", "--start", "2015-01-01",
                   "--signals", str(signals), "--json", str(kept), "--name", "first")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = backtests.all_(seeded)
    app = json.loads(backtests.report_json(backtests.report(seeded, row.id)))
    assert json.loads(kept.read_text()) == app
    code, out, _ = cli(capsys, "show", "backtest", str(row.id), "--json")
    assert code == 0 and json.loads(out) == app
    code, _, err = cli(capsys, "backtest", "--symbol", "SP500", "--timeframe", "1d", "--start",
                       "2015-01-01", "--signals", str(signals), "--json", str(loose), "--no-save")  # fmt: skip
    assert code == 0, err
    unsaved = json.loads(loose.read_text())
    assert list(unsaved) == list(app) and unsaved["id"] is None
    assert unsaved["trades"] == app["trades"] and unsaved["equity"] == app["equity"]
    assert app["signals"] == "signals.csv" and app["predictions"] is None
    assert app["trained_during_run"] is None and app["metrics"]["# Trades"] == 2


def test_list_and_show_print_tables_json_and_what_trained(seeded, capsys):
    ts = [1_420_156_800_000, 1_420_243_200_000]
    plain = backtests.create(seeded, name="plain", symbol="SP500", timeframe="1d", start_ts=ts[0],
                             end_ts=ts[1], signals_name="s.csv", settings={}, created_by="ana")  # fmt: skip
    backtests.finish(seeded, plain, "done", metrics={"Return [%]": 1.5, "# Trades": 1})
    trained = backtests.create(
        seeded, name="learns\x1b[31m red", symbol="SP500", timeframe="1d", start_ts=ts[0],
        end_ts=ts[1], settings={"train_mode": "every_candle", "training_steps": 40}, created_by="bo",
    )  # fmt: skip
    backtests.finish(seeded, trained, "done", metrics={"Return [%]": -2.0, "# Trades": 3})

    code, out, _ = cli(capsys, "list", "backtests")
    header, first, second = out.splitlines()
    assert code == 0 and header.split()[:4] == ["id", "name", "status", "source"]
    assert first.split()[0] == str(trained) and second.split()[0] == str(plain)  # newest first
    assert "\x1b" not in out and "learns?[31m red" in first  # no terminal control from a name
    code, out, _ = cli(capsys, "list", "backtests", "--json", "--limit", "1")
    (only,) = json.loads(out)
    assert only["id"] == trained and only["trained_during_run"] is True
    assert only["return_pct"] == -2.0 and only["from"].startswith("2015-01-02T00:00:00")

    code, out, _ = cli(capsys, "show", "backtest", str(trained))
    shown = json.loads(out)
    assert shown["trades"] == 3 and shown["predictions"] == 0  # counts, not arrays
    assert shown["trained_during_run"].startswith("trained while backtesting")
    assert (
        "every candle" in shown["trained_during_run"] and "step 40" in shown["trained_during_run"]
    )
    assert cli(capsys, "show", "backtest", "999")[0] == 2

    code, out, _ = cli(capsys, "list", "datasets")
    assert code == 0 and out.splitlines()[0].split() == [
        "symbol",
        "timeframe",
        "candles",
        "first",
        "last",
    ]
    assert {line.split()[0] for line in out.splitlines()[1:]} == {"NASDAQ", "SP500"}
    code, out, _ = cli(capsys, "list", "datasets", "--json")
    assert {d["symbol"] for d in json.loads(out)} == {"NASDAQ", "SP500"}
    for what in ("checkpoints", "sessions", "models"):
        assert cli(capsys, "list", what) == (0, f"no {what} yet\n", "")
        assert cli(capsys, "list", what, "--json")[1] == "[]\n"
    code, _, err = cli(capsys, "show", "checkpoint", "7")
    assert code == 2 and "no checkpoint with id 7" in err and "list checkpoints" in err
    with pytest.raises(SystemExit):
        main(["list", "backtests", "--limit", "0"])
    assert "a whole number of rows, 1 or more, not '0'" in capsys.readouterr().err


def test_a_backtest_on_a_symbol_that_is_not_stored_names_what_is(seeded, tmp_path, capsys):
    signals = signals_file(tmp_path)
    code, _, err = cli(capsys, "backtest", "--symbol", "SP50", "--timeframe", "1d",
                       "--signals", str(signals))  # fmt: skip
    assert code == 2 and "no candles are stored for 'SP50' '1d'" in err
    assert "SP500 1d (1,096 candles, 2014-01-01 → 2016-12-31)" in err
    assert "NASDAQ 1d" in err and "import-csv" in err
    code, _, err = cli(capsys, "backtest", "--symbol", "SP500", "--timeframe", "1d", "--start",
                       "2030-01-01", "--signals", str(signals))  # fmt: skip
    assert code == 2 and "only 0 stored candles for SP500 1d in that range" in err
    assert "2014-01-01 00:00 to 2016-12-31 00:00 UTC" in err


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(seeded, home):
    """`python -m engine list datasets | head -1`, `submit ping | head`: the reader closes its
    end before the CLI writes (here: at once), so the write fails with EPIPE."""
    env = {**os.environ, "CANDLELAB_HOME": str(home)}
    env.pop("DATABASE_URL", None)
    for args in (["list", "datasets"], ["submit", "ping"]):
        proc = subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        proc.stdout.close()  # the reader is gone before the first line is written
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 141, err
        assert "Traceback" not in err and "BrokenPipe" not in err, err
