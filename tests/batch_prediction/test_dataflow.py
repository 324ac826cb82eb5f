"""Dataflow settings -> Beam flags (validated before any job is built)."""

import json

import pytest

from vertex_imbalanced.batch_prediction.dataflow import DataflowConfig, job_name, pipeline_flags
from vertex_imbalanced.errors import PipelineInputError

KEY = "projects/p/locations/us-central1/keyRings/r/cryptoKeys/k"
FULL = {
    "project": "my-proj",
    "region": "europe-west4",
    "temp_location": "gs://bucket/tmp/",
    "staging_location": "gs://bucket/stage",
    "sdk_container_image": "europe-docker.pkg.dev/my-proj/repo/trainer:1",
    "service_account": "scorer@my-proj.iam.gserviceaccount.com",
    "network": "vpc",
    "subnetwork": "regions/europe-west4/subnetworks/sub",
    "machine_type": "n2-standard-8",
    "max_workers": 7,
    "kms_key": KEY,
    "no_public_ips": True,
}


def test_every_setting_becomes_its_beam_flag():
    config = DataflowConfig.from_json(json.dumps(FULL))
    flags = pipeline_flags(config, "Batch-Prediction 2026/11/30")
    assert flags == [
        "--runner=DataflowRunner",
        "--project=my-proj",
        "--region=europe-west4",
        "--job_name=score-batch-prediction-2026-11-30",
        "--temp_location=gs://bucket/tmp/beam-temp",
        "--staging_location=gs://bucket/stage/beam-staging",
        "--sdk_container_image=europe-docker.pkg.dev/my-proj/repo/trainer:1",
        "--sdk_location=container",
        "--machine_type=n2-standard-8",
        "--max_num_workers=7",
        "--autoscaling_algorithm=THROUGHPUT_BASED",
        "--labels=imbalanced_run=score-batch-prediction-2026-11-30",
        "--service_account_email=scorer@my-proj.iam.gserviceaccount.com",
        "--network=vpc",
        "--subnetwork=regions/europe-west4/subnetworks/sub",
        f"--dataflow_kms_key={KEY}",
        "--no_use_public_ips",
    ]
    assert DataflowConfig.from_json(config.to_json()) == config


def test_no_config_runs_in_process_on_the_fn_api_runner_without_prism(tmp_path, monkeypatch):
    """Beam's DirectRunner would try Prism first (a GitHub download at run time) and, offline,
    leave a ``beam-temp*`` directory behind on every run; the local flags avoid both."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.runners.runner import create_runner
    from apache_beam.testing.util import assert_that, equal_to

    assert DataflowConfig.from_json("") is None
    assert DataflowConfig.from_json("{}") is None
    options = PipelineOptions(pipeline_flags(None, "r"))
    assert isinstance(create_runner(options.view_as(StandardOptions).runner), FnApiRunner)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where Beam's job servers make their temp dirs
    monkeypatch.setattr("tempfile.tempdir", None)
    with beam.Pipeline(options=options) as pipeline:
        squares = pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * x)
        assert_that(squares, equal_to([1, 4, 9]))
    assert list(tmp_path.iterdir()) == []


def test_job_names_fit_dataflow_rules():
    name = job_name("X" * 100 + "--")
    assert len(name) <= 63 and name.startswith("score-x") and not name.endswith("-")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"region": "Europe"}, "region 'Europe'"),
        ({"temp_location": "/tmp/x"}, "temp_location '/tmp/x' must be gs://"),
        ({"staging_location": "s3://b"}, "staging_location 's3://b'"),
        ({"max_workers": 0}, "max_workers must be >= 1"),
        ({"kms_key": "my-key"}, "kms_key 'my-key' must be projects/"),
        ({"sdk_container_image": ""}, "sdk_container_image"),
        ({"workers": 3}, r"unknown dataflow config keys \['workers'\]"),
    ],
)
def test_bad_settings_are_named(change, message):
    with pytest.raises(PipelineInputError, match=message):
        DataflowConfig.from_json(json.dumps({**FULL, **change}))
