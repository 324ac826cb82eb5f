"""The Dataflow job request Beam builds for a scoring run, captured offline (nothing is sent).

Beam's DataflowRunner with ``--dry_run`` translates the pipeline; Beam's own
``create_job_description`` then fills in the environment, its uploads captured in memory.
Not testable offline (README): that Dataflow accepts the request and boots the project image,
worker access to the SavedModel on gs:// and to BigQuery, the job's error text on failure.
"""

import duckdb
import pytest
from conftest_models import make_table

from vertex_imbalanced.batch_prediction.beam_pipeline import (
    RecordBatchModelHandler,
    describe_job,
)
from vertex_imbalanced.batch_prediction.dataflow import DataflowConfig, pipeline_flags
from vertex_imbalanced.batch_prediction.output import output_schema
from vertex_imbalanced.batch_prediction.scoring import InputColumns
from vertex_imbalanced.reading.sources.duckdb_source import DuckDBSource

KEY = "projects/p/locations/europe-west4/keyRings/r/cryptoKeys/k"
IMAGE = "europe-docker.pkg.dev/my-proj/repo/trainer:1"
CONFIG = DataflowConfig(
    project="my-proj",
    region="europe-west4",
    temp_location="gs://my-bucket/tmp",
    sdk_container_image=IMAGE,
    service_account="scorer@my-proj.iam.gserviceaccount.com",
    network="vpc",
    subnetwork="regions/europe-west4/subnetworks/sub",
    machine_type="n2-standard-8",
    max_workers=7,
    kms_key=KEY,
    no_public_ips=True,
)


@pytest.fixture(scope="module")
def request_sent(tmp_path_factory):
    db = tmp_path_factory.mktemp("df") / "in.duckdb"
    with duckdb.connect(str(db)) as con:
        con.register("t", make_table(["a", "b"], [10, 10]))
        con.execute("CREATE TABLE rows AS SELECT * FROM t")
    source = DuckDBSource(db, "rows", ["id", "x", "color"])
    handler = RecordBatchModelHandler(
        "gs://my-bucket/model", "clf", "3", InputColumns(("x",), ("color",), "id")
    )
    schema = output_schema("id", source.schema.field("id").type)
    return describe_job(
        source, handler, "gs://my-bucket/staging/run-1", schema, pipeline_flags(CONFIG, "run-1")
    )


def test_the_job_runs_where_and_as_configured(request_sent):
    job, _ = request_sent
    assert job["name"] == "score-run-1" and job["type"] == "JOB_TYPE_BATCH"
    assert job["labels"] == {"imbalanced_run": "score-run-1"}
    env = job["environment"]
    assert env["serviceAccountEmail"] == CONFIG.service_account
    assert env["serviceKmsKeyName"] == KEY
    assert env["tempStoragePrefix"].startswith("storage.googleapis.com/my-bucket/tmp/beam-temp/")
    [pool] = env["workerPools"]
    assert pool["machineType"] == "n2-standard-8"
    assert (pool["network"], pool["subnetwork"]) == ("vpc", CONFIG.subnetwork)
    assert pool["ipConfiguration"] == "WORKER_IP_PRIVATE"
    assert pool["autoscalingSettings"]["maxNumWorkers"] == 7
    assert pool["workerHarnessContainerImage"] == IMAGE
    [sdk] = pool["sdkHarnessContainerImages"]
    assert sdk["containerImage"] == IMAGE
    assert "use_runner_v2" in env["experiments"]


def test_staged_files_hold_the_pipeline_and_no_sdk_tarball(request_sent):
    _, staged = request_sent
    names = {path.rsplit("/", 1)[1] for path in staged}
    assert "pipeline.pb" in names
    # --sdk_location=container: the workers use the SDK inside the project image
    assert not any(name.endswith((".tar.gz", ".whl")) for name in names)
    assert all(path.startswith("gs://my-bucket/tmp/beam-staging/") for path in staged)
    pipeline = next(data for path, data in staged.items() if path.endswith("pipeline.pb"))
    assert b"vertex_imbalanced.batch_prediction" in pipeline  # our handler and reader
    assert b"RunInference" in pipeline
