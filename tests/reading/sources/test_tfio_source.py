"""tensorflow-io reader against the local v1beta1 server (legacy env only: make test-legacy)."""

import importlib
import io
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

pytestmark = pytest.mark.legacy
if os.environ.get("VERTEX_IMBALANCED_LEGACY_RUN") == "1":  # make test-legacy: a broken env fails
    tfio_bigquery = importlib.import_module("tensorflow_io.bigquery")
else:  # the main env has no tensorflow-io: skip
    tfio_bigquery = pytest.importorskip("tensorflow_io.bigquery")

import fastavro  # noqa: E402

from fakes.arrow_tables import make_typed_table, make_wide_table  # noqa: E402
from fakes.storage_server_v1beta1 import (  # noqa: E402
    Faults,
    StorageReadV1Beta1Server,
    avro_schema_json,
    encode_avro,
)
from vertex_imbalanced.config import FeatureSpec  # noqa: E402
from vertex_imbalanced.errors import (  # noqa: E402
    LabelError,
    PipelineInputError,
    SchemaError,
    SourceError,
)
from vertex_imbalanced.reading.record_packing import categorical_to_string, numeric_to_float32  # noqa: E402
from vertex_imbalanced.reading.sources.tfio_source import (  # noqa: E402
    TfioBigQuerySource,
    make_tfio_dataset,
    raise_tfio_errors,
)

TYPED = make_typed_table(60, seed=3)  # NULLs in every feature column, at different rows
TYPED_SPEC = FeatureSpec(
    label="label", numeric=("i64", "f64", "flag", "day", "ts"), categorical=("cat",), key="key"
)


@pytest.fixture(scope="module")
def server():
    with StorageReadV1Beta1Server(batch_rows=16) as srv:
        srv.add_table("p.d.typed", TYPED)
        srv.add_table("p.d.wide", make_wide_table(1000, n_float=3, n_string=2, key=True))
        srv.add_table("p.d.empty", TYPED.slice(0, 0))
        srv.add_table("p.d.broken", TYPED, Faults(break_at_row=20))
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return tfio_bigquery.BigQueryTestClient(server.address)


def collect(ds, description="the table"):
    """All batches of a dataset as numpy columns (features, then label, weight), in row order."""
    columns: dict[str, list] = {}
    with raise_tfio_errors(description):
        for features, label, weight in ds:
            for name, values in {**features, "_label": label, "_weight": weight}.items():
                columns.setdefault(name, []).append(values.numpy())
    return {name: np.concatenate(parts) for name, parts in columns.items()}


def by_key(columns, keys):
    order = np.argsort(keys)
    return {name: values[order] for name, values in columns.items()}


def test_avro_typed_table_with_nulls_matches_main_converter(client):
    spec = FeatureSpec(**{**TYPED_SPEC.to_dict(), "numeric": ("key", *TYPED_SPEC.numeric)})
    ds = make_tfio_dataset("p.d.typed", spec, client=client, num_streams=2, batch_size=7)
    columns = collect(ds)
    got = by_key(columns, columns["key"])
    # the main converter's own Arrow -> numpy functions are the oracle
    for name in ("i64", "f64", "day", "ts"):
        expected = numeric_to_float32(TYPED.column(name).combine_chunks())
        np.testing.assert_array_equal(got[name], expected, err_msg=name)  # NaN where NULL
        assert np.isnan(got[name]).sum() == TYPED.column(name).null_count > 0
    # documented difference: a NULL BOOL reads as false (0.0), not NaN
    flag = TYPED.column("flag").combine_chunks()
    expected = np.nan_to_num(numeric_to_float32(flag), nan=0.0)
    np.testing.assert_array_equal(got["flag"], expected)
    expected_cat = categorical_to_string(TYPED.column("cat").combine_chunks()).to_pylist()
    assert [v.decode() for v in got["cat"]] == expected_cat
    assert "" in expected_cat
    np.testing.assert_array_equal(got["_label"], TYPED.column("label").to_numpy())
    np.testing.assert_array_equal(got["_weight"], np.ones(TYPED.num_rows, np.float32))
    assert got["f64"].dtype == np.float32 and got["_label"].dtype == np.int64


def test_avro_int64_categorical_string_label_and_weight(server, client):
    table = pa.table(
        {
            "id": pa.array([10, 11, 12, 13], pa.int64()),
            "code": pa.array([7, None, -3, 7], pa.int64()),
            "w": pa.array([1.0, 2.5, 0.5, 1.0]),
            "y": pa.array(["no", "yes", "no", "no"]),
        }
    )
    server.add_table("p.d.small", table)
    spec = FeatureSpec(
        label="y", categorical=("code",), key="id", classes=("no", "yes"), weight="w"
    )
    got = collect(make_tfio_dataset("p.d.small", spec, client=client, num_streams=1))
    assert [v.decode() for v in got["code"]] == ["7", "", "-3", "7"]  # NULL -> "" as in main
    assert got["_label"].tolist() == [0, 1, 0, 0]
    assert got["_weight"].tolist() == [1.0, 2.5, 0.5, 1.0]


def test_null_label_is_a_label_error_naming_column_and_key(server, client):
    table = pa.table({"id": [1, 2, 3], "x": [0.1, 0.2, 0.3], "y": pa.array([0, None, 1])})
    server.add_table("p.d.nolabel", table)
    spec = FeatureSpec(label="y", numeric=("x",), key="id")
    with pytest.raises(LabelError, match=r"label column 'y'.*NULL at id=2"):
        collect(make_tfio_dataset("p.d.nolabel", spec, client=client, num_streams=1))
    server.add_table("p.d.unknown", table.set_column(2, "y", pa.array(["a", "b", "c"])))
    spec = FeatureSpec(label="y", numeric=("x",), key="id", classes=("a", "c"))
    with pytest.raises(LabelError, match=r"classes \['a', 'c'\]; first: value b at id=2"):
        collect(make_tfio_dataset("p.d.unknown", spec, client=client, num_streams=1))


def test_arrow_without_nulls_reads_the_same_values(client):
    wide = make_wide_table(1000, n_float=3, n_string=2, key=True)
    spec = FeatureSpec(label="label", numeric=("key", "f00", "f02"), categorical=("s01",))
    ds = make_tfio_dataset("p.d.wide", spec, client=client, data_format="ARROW", batch_size=100)
    columns = collect(ds)
    got = by_key(columns, columns["key"])
    np.testing.assert_array_equal(got["key"], np.arange(1000, dtype=np.float32))
    np.testing.assert_array_equal(got["f02"], wide.column("f02").to_numpy().astype(np.float32))
    assert [v.decode() for v in got["s01"]] == wide.column("s01").to_pylist()
    np.testing.assert_array_equal(got["_label"], wide.column("label").to_numpy())


def test_arrow_with_nulls_raises_a_clear_error(client):
    spec = FeatureSpec(label="label", numeric=("i64", "f64"), categorical=("cat",), key="key")
    ds = make_tfio_dataset("p.d.typed", spec, client=client, data_format="ARROW")
    with pytest.raises(SourceError, match=r"p\.d\.typed has NULL values.*ARROW.*AVRO"):
        collect(ds, "p.d.typed")


def test_arrow_refuses_date_and_timestamp_before_reading(client):
    with pytest.raises(SchemaError, match=r"'day'.*DATE.*ARROW.*AVRO"):
        TfioBigQuerySource("p.d.typed", TYPED_SPEC, client=client, data_format="ARROW")


def test_streams_and_shards_cover_every_row_once(client):
    spec = FeatureSpec(label="label", numeric=("key",))
    source = TfioBigQuerySource("p.d.wide", spec, client=client, num_streams=3)
    assert source.num_streams == 3
    keys = [
        collect(source.dataset(64, shard_index=i, num_shards=2))["key"].astype(int)
        for i in range(2)
    ]
    assert len(keys[0]) and len(keys[1])
    assert not set(keys[0]) & set(keys[1])
    assert sorted(np.concatenate(keys)) == list(range(1000))


def test_bad_tables_and_columns(client):
    with pytest.raises(PipelineInputError, match=r"p\.d\.nope not found"):
        TfioBigQuerySource("p.d.nope", TYPED_SPEC, client=client)
    misspelled = FeatureSpec(label="label", numeric=("f46",))
    with pytest.raises(SchemaError, match=r"f46"):
        TfioBigQuerySource("p.d.typed", misspelled, client=client)
    with pytest.raises(SchemaError, match=r"'cat'.*STRING.*numeric"):
        TfioBigQuerySource("p.d.typed", FeatureSpec(label="label", numeric=("cat",)), client=client)
    with pytest.raises(PipelineInputError, match="zero streams"):
        TfioBigQuerySource("p.d.empty", TYPED_SPEC, client=client)
    with pytest.raises(PipelineInputError, match="zero streams.*key < 0"):
        TfioBigQuerySource("p.d.typed", TYPED_SPEC, client=client, row_restriction="key < 0")


def test_row_restriction(client):
    ds = make_tfio_dataset("p.d.typed", TYPED_SPEC, client=client, row_restriction="key >= 50")
    assert sorted(collect(ds)["_label"].tolist()) == sorted(TYPED.column("label")[50:].to_pylist())


def test_broken_stream_is_a_source_error_in_fail_safe_mode(client):
    source = TfioBigQuerySource("p.d.broken", TYPED_SPEC, client=client, num_streams=2)
    with pytest.raises(SourceError, match=r"does not retry.*streams/\d at offset 20"):
        collect(source.dataset(8, num_parallel_calls=1), "p.d.broken")


ABORT_SCRIPT = """
import tensorflow_io.bigquery as tb
from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.reading.sources.tfio_source import make_tfio_dataset
from fakes.arrow_tables import make_typed_table
from fakes.storage_server_v1beta1 import Faults, StorageReadV1Beta1Server
with StorageReadV1Beta1Server(batch_rows=16) as srv:
    srv.add_table("p.d.t", make_typed_table(60), Faults(break_at_row=20))
    spec = FeatureSpec(label="label", numeric=("f64",))
    for _ in make_tfio_dataset("p.d.t", spec, client=tb.BigQueryTestClient(srv.address)):
        pass
print("survived")
"""


def test_broken_stream_aborts_the_process_in_parallel_mode():
    """Upstream behaviour we document (tensorflow-io 0.37.1): gRPC Read after Finish -> abort."""
    proc = subprocess.run(
        [sys.executable, "-c", ABORT_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGABRT, proc.stdout + proc.stderr[-2000:]
    assert "call_op_set.h" in proc.stderr and "survived" not in proc.stdout


def test_server_avro_encoding_decodes_with_fastavro():
    table = make_typed_table(300, seed=1)
    offsets, data = encode_avro(table)
    schema = fastavro.parse_schema(json.loads(avro_schema_json(table.schema)))
    buf = io.BytesIO(data.tobytes())
    rows = [fastavro.schemaless_reader(buf, schema) for _ in range(table.num_rows)]
    assert buf.tell() == len(data) == offsets[-1]
    expected = table.to_pylist()
    for got, want in zip(rows, expected, strict=True):
        assert got == want
