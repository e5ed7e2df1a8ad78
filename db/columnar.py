"""Large reads straight into numpy arrays, without SQLAlchemy's per-row objects.

Why: a million candles read through SQLAlchemy Rows took 3-5 s of a backtest that should take a
few. On PostgreSQL the rows come through ADBC (Arrow Database Connectivity: binary COPY into
Arrow columns, no Python object per value). On SQLite they come from the driver's own cursor in
blocks turned into arrays at once: ADBC's SQLite driver would be faster, but it carries its own
copy of SQLite, and two copies of SQLite in one process break each other's POSIX locks on the
same file (sqlite.org/howtocorrupt.html, 2.2.1): we saw a SIGBUS on the WAL index.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import Engine, Select

BLOCK = 65_536  # SQLite rows per fetch: a block's tuples are freed once it is an array


def read(engine: Engine, query: Select, names: list[str], dtypes: list[str]) -> dict:
    """`query`'s columns, in order, as arrays named `names` of `dtypes`."""
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    if engine.url.get_backend_name() == "postgresql":
        from adbc_driver_postgresql import dbapi

        url = engine.url.set(drivername="postgresql").render_as_string(False)
        with dbapi.connect(url) as c, c.cursor() as cur:
            cur.execute(sql)
            table = cur.fetch_arrow_table()
        columns = [table.column(i).to_numpy(zero_copy_only=False) for i in range(len(names))]
    else:
        with engine.connect() as conn:
            cur = conn.connection.driver_connection.cursor()
            cur.execute(sql)
            blocks = []
            while rows := cur.fetchmany(BLOCK):
                blocks.append(np.array(rows, dtype=np.float64))
            cur.close()
        block = np.concatenate(blocks) if blocks else np.empty((0, len(names)))
        columns = list(block.T)
    return {
        name: np.ascontiguousarray(values).astype(dtype, copy=False)
        for name, values, dtype in zip(names, columns, dtypes, strict=True)
    }
