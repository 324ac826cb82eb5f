"""BigQuery's ``FARM_FINGERPRINT`` for DuckDB, so the same sql/ files split the same rows.

BigQuery returns FarmHash Fingerprint64 as a *signed* INT64; ``pyfarmhash`` returns the same
64 bits as an unsigned Python int. The UDF reinterprets the bits (no arithmetic), which gives
``FARM_FINGERPRINT('alphabet') = -2427165924636348523`` exactly as BigQuery documents.
"""

from __future__ import annotations

import duckdb
import farmhash
import numpy as np
import pyarrow as pa

UDF_NAME = "farm_fingerprint"


def farm_fingerprint(value: str) -> int:
    """Signed INT64 FarmHash Fingerprint64 of a string, as BigQuery's ``FARM_FINGERPRINT``."""
    return int(np.array([farmhash.fingerprint64(value)], dtype=np.uint64).view(np.int64)[0])


def _fingerprint_arrow(values: pa.Array) -> pa.Array:
    """Vectorised UDF body: one Arrow VARCHAR array in, one Arrow BIGINT array out (NULL kept)."""
    strings = values.to_pylist()
    fingerprint = farmhash.fingerprint64
    unsigned = np.fromiter(
        (0 if s is None else fingerprint(s) for s in strings), dtype=np.uint64, count=len(strings)
    )
    mask = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
    return pa.array(unsigned.view(np.int64), type=pa.int64(), mask=mask)


def register_farm_fingerprint(con: duckdb.DuckDBPyConnection) -> None:
    """Register ``farm_fingerprint(VARCHAR) -> BIGINT`` on a DuckDB connection (idempotent)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_functions() WHERE function_name = ?", [UDF_NAME]
    ).fetchall()[0][0]
    if exists:
        return
    con.create_function(
        UDF_NAME,
        _fingerprint_arrow,
        [duckdb.sqltype("VARCHAR")],
        duckdb.sqltype("BIGINT"),
        type="arrow",
        null_handling="special",
        side_effects=False,
    )
