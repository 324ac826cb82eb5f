"""submit.py and pipelines/submission.py against a local Vertex REST server (no Google Cloud)."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.cloud.aiplatform import pipeline_jobs

import submit
from components.image import PROJECT_IMAGE
from fakes.vertex import FakeVertex
from fakes.vertex_metadata import FakeMetadata
from fakes.vertex_pipelines import FakePipelineJobs
from pipelines.compilation import TRAINING, compile_pipelines
from pipelines.submission import SubmitOptions, console_url, kms_key_gaps, options_from_args
from vertex_imbalanced.errors import PipelineInputError

PROJECT = "test-project"
LOCATION = f"projects/{PROJECT}/locations/us-central1"
STORE = f"{LOCATION}/metadataStores/default"
FEATURES = json.dumps({"label": "y", "numeric": ["x1"], "key": "id"})
IMAGE = "europe-docker.pkg.dev/acme/ml/trainer:1.2.3"
KEY = "projects/kms-project/locations/us-central1/keyRings/ring/cryptoKeys/key"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    [path] = compile_pipelines(tmp_path_factory.mktemp("tpl"), image=IMAGE, pipelines=[TRAINING])
    return path


@pytest.fixture(scope="module")
def keyed_template(template, tmp_path_factory):
    """The template with the key wired into every resource step, prepare-data included.

    The prepare component takes no ``kms_key`` yet (requested); this copy adds the input the
    way KFP compiles it, so submit's handling of a fully wired template is tested today.
    """
    spec = yaml.safe_load(template.read_text())
    inputs = spec["components"]["comp-prepare-data"]["inputDefinitions"]["parameters"]
    inputs.setdefault(
        "kms_key", {"parameterType": "STRING", "defaultValue": "", "isOptional": True}
    )
    task = spec["root"]["dag"]["tasks"]["prepare-data"]["inputs"]["parameters"]
    task["kms_key"] = {"componentInputParameter": "kms_key"}
    path = tmp_path_factory.mktemp("keyed") / "training_pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def printed_request(out: str) -> dict:
    """The JSON request of a dry run (after its '# ' summary lines)."""
    lines = out.splitlines()
    assert lines and lines[0].startswith("# dry run: nothing was sent"), out[:200]
    return json.loads("\n".join(line for line in lines if not line.startswith("# ")))


@pytest.fixture
def fake(monkeypatch):
    # The SDK checks the GCS bucket before submitting (not redirected; 40-120 s offline).
    monkeypatch.setattr(
        pipeline_jobs.gcs_utils,
        "create_gcs_bucket_for_pipeline_artifacts_if_it_does_not_exist",
        lambda **kwargs: None,
    )
    with FakeVertex() as server:
        yield server


def sent(fake, method, path):
    """The recorded requests to exactly ``path`` (``fake.calls`` matches a substring)."""
    return [r for r in fake.requests if r.method == method and r.path == path]


def base_args(template, fake, *extra):
    return [
        "--project", PROJECT,
        "--region", "us-central1",
        "--pipeline-root", "gs://my-bucket/runs",
        "--template", str(template),
        "--api-endpoint", fake.endpoint,
        "--param", "source_uri=bq://src-project.sales.orders",
        "--param", f"feature_config={FEATURES}",
        "--poll-seconds", "0.01",
        *extra,
    ]  # fmt: skip


def test_submit_sends_parameters_labels_sa_network_caching_root(template, fake, capsys):
    jobs = FakePipelineJobs.install(fake)
    rc = submit.main(
        base_args(
            template,
            fake,
            "--param", "min_metric=0.25",
            "--param", "hyperparameters={\"epochs\": 3}",
            "--labels", "team=ml,env=test",
            "--service-account", "runner@test-project.iam.gserviceaccount.com",
            "--network", "projects/123/global/networks/vpc",
            "--no-cache",
            "--job-id", "train-run-1",
        )
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    [create] = fake.calls("POST", "/pipelineJobs")
    assert create.path == f"/v1/projects/{PROJECT}/locations/us-central1/pipelineJobs"
    assert create.query["pipelineJobId"] == "train-run-1"
    body = create.body
    runtime = body["runtimeConfig"]
    assert runtime["gcsOutputDirectory"] == "gs://my-bucket/runs"
    params = runtime["parameterValues"]
    assert params["source_uri"] == "bq://src-project.sales.orders"
    assert json.loads(params["feature_config"])["label"] == "y"
    assert params["min_metric"] == 0.25
    assert json.loads(params["hyperparameters"]) == {"epochs": 3}
    # derived from --project/--region when not given
    assert params["registry_uri"] == f"vertex://{PROJECT}/us-central1"
    assert body["labels"]["team"] == "ml" and body["labels"]["env"] == "test"
    assert body["serviceAccount"] == "runner@test-project.iam.gserviceaccount.com"
    assert body["network"] == "projects/123/global/networks/vpc"
    assert "encryptionSpec" not in body and "kms_key" not in params  # no key: Google-managed
    assert params["billing_project"] == PROJECT  # jobs bill in the job's project
    tasks = body["pipelineSpec"]["root"]["dag"]["tasks"]
    assert tasks and all(t["cachingOptions"].get("enableCache") is not True for t in tasks.values())
    name = f"projects/{PROJECT}/locations/us-central1/pipelineJobs/train-run-1"
    assert name in jobs.jobs
    assert name in out
    assert (
        "console.cloud.google.com/vertex-ai/locations/us-central1/pipelines/runs/train-run-1" in out
    )


def test_caching_left_to_the_template_without_no_cache(template, fake):
    FakePipelineJobs.install(fake)
    assert submit.main(base_args(template, fake)) == 0
    [create] = fake.calls("POST", "/pipelineJobs")
    tasks = create.body["pipelineSpec"]["root"]["dag"]["tasks"]
    assert tasks["train"]["cachingOptions"].get("enableCache") is True
    assert tasks["prepare-data"]["cachingOptions"].get("enableCache") is not True


def test_schedule_creates_a_pipeline_job_schedule(template, fake, capsys):
    service = FakePipelineJobs.install(fake)
    rc = submit.main(base_args(template, fake, "--schedule", "0 3 * * 1"))
    assert rc == 0
    [create] = fake.calls("POST", "/schedules")
    assert create.body["cron"] == "0 3 * * 1"
    job = create.body["createPipelineJobRequest"]["pipelineJob"]
    assert job["runtimeConfig"]["parameterValues"]["source_uri"] == "bq://src-project.sales.orders"
    assert not fake.calls("POST", "/pipelineJobs")
    [name] = service.schedules
    assert name in capsys.readouterr().out


@pytest.mark.parametrize(
    ("final_state", "expected_rc"),
    [("PIPELINE_STATE_SUCCEEDED", 0), ("PIPELINE_STATE_FAILED", 1)],
)
def test_wait_follows_the_job_to_its_end(template, fake, capsys, final_state, expected_rc):
    FakePipelineJobs.install(fake, final_state=final_state, running_polls=2)
    rc = submit.main(base_args(template, fake, "--wait"))
    captured = capsys.readouterr()
    assert rc == expected_rc
    assert "PIPELINE_STATE_RUNNING" in captured.out
    assert final_state in captured.out
    assert len(fake.calls("GET", "/pipelineJobs/")) >= 3
    if expected_rc:
        assert "some tasks failed: train" in captured.err


def test_experiment_is_created_and_the_run_associated(template, fake):
    metadata = FakeMetadata.install(fake)
    jobs = FakePipelineJobs.install(fake, metadata=metadata)
    rc = submit.main(base_args(template, fake, "--experiment", "my-exp", "--job-id", "run-1"))
    assert rc == 0
    # the default store (a long-running operation) and the experiment context come first
    calls = [(r.method, r.path) for r in fake.requests]
    job_create = calls.index(("POST", f"/v1/{LOCATION}/pipelineJobs"))
    [create_store] = sent(fake, "POST", f"/v1/{LOCATION}/metadataStores")
    assert create_store.query["metadataStoreId"] == "default"
    assert calls.index(("POST", create_store.path)) < job_create
    assert fake.calls("GET", f"{STORE}/operations/")
    [create_context] = sent(fake, "POST", f"/v1/{STORE}/contexts")
    assert calls.index(("POST", create_context.path)) < job_create
    assert create_context.query["contextId"] == "my-exp"
    assert create_context.body["schemaTitle"] == "system.Experiment"
    assert create_context.body["displayName"] == "my-exp"
    assert STORE in metadata.stores
    [create_job] = fake.calls("POST", "/pipelineJobs")
    assert create_job.query["pipelineJobId"] == "run-1"
    assert create_job.body["runtimeConfig"]["gcsOutputDirectory"] == "gs://my-bucket/runs"
    assert f"projects/{PROJECT}/locations/us-central1/pipelineJobs/run-1" in jobs.jobs
    # then the job's system.PipelineRun context becomes a child of the experiment
    experiment = f"{STORE}/contexts/my-exp"
    [associate] = fake.calls("POST", ":addContextChildren")
    assert associate.path == f"/v1/{experiment}:addContextChildren"
    assert associate.body["childContexts"] == [f"{STORE}/contexts/run-1"]
    assert metadata.contexts[experiment]["schemaTitle"] == "system.Experiment"
    assert metadata.children(experiment) == [f"{STORE}/contexts/run-1"]
    assert metadata.contexts[f"{STORE}/contexts/run-1"]["schemaTitle"] == "system.PipelineRun"


def test_existing_experiment_is_reused(template, fake):
    metadata = FakeMetadata.install(fake)
    FakePipelineJobs.install(fake, metadata=metadata)
    for job_id in ("run-1", "run-2"):
        args = base_args(template, fake, "--experiment", "my-exp", "--job-id", job_id)
        assert submit.main(args) == 0
    assert len(sent(fake, "POST", f"/v1/{LOCATION}/metadataStores")) == 1
    assert len(sent(fake, "POST", f"/v1/{STORE}/contexts")) == 1  # the second run only GETs it
    assert len(sent(fake, "GET", f"/v1/{STORE}/contexts/my-exp")) == 4  # 2 per run
    runs = [f"{STORE}/contexts/run-1", f"{STORE}/contexts/run-2"]
    assert [r.body["childContexts"] for r in fake.calls("POST", ":addContextChildren")] == [
        [runs[0]],
        [runs[1]],
    ]
    assert metadata.children(f"{STORE}/contexts/my-exp") == runs


def test_a_context_that_is_not_an_experiment_stops_the_submission(template, fake, capsys):
    metadata = FakeMetadata.install(fake)
    FakePipelineJobs.install(fake, metadata=metadata)
    metadata.ensure_store(LOCATION)
    metadata.put_context(STORE, "my-exp", "system.PipelineRun")
    assert submit.main(base_args(template, fake, "--experiment", "my-exp")) == 1
    err = capsys.readouterr().err
    assert "error: Vertex AI request failed" in err
    assert "Experiment my-exp could not be found or created" in err
    assert not fake.calls("POST", "/pipelineJobs")
    assert not sent(fake, "POST", f"/v1/{STORE}/contexts")


def test_dry_run_prints_the_request_and_sends_nothing(template, fake, capsys):
    rc = submit.main(base_args(template, fake, "--dry-run", "--service-account", "sa@x.iam"))
    captured = capsys.readouterr()
    request = printed_request(captured.out)
    summary = [line for line in captured.out.splitlines() if line.startswith("# ")]
    assert summary[0] == (
        f"# dry run: nothing was sent. job of pipeline 'imbalanced-training' in {LOCATION}"
    )
    assert (
        "# data: bq://src-project.sales.orders -> registry vertex://test-project/us-central1, "
        "model derived from the table and label"
    ) in summary
    assert "# encryption: Google-managed keys" in summary
    assert not [line for line in summary if line.startswith("# training")]  # a plain task here
    assert captured.err == ""  # a pushed image: no placeholder warning
    assert rc == 0
    assert request["method"] == "CreatePipelineJob"
    assert request["pipelineJob"]["serviceAccount"] == "sa@x.iam"
    assert request["pipelineJob"]["runtimeConfig"]["gcsOutputDirectory"] == "gs://my-bucket/runs"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("extra", "replace", "message"),
    [
        (["--param", "learning_rate=0.1"], None, "unknown pipeline parameter(s) ['learning_rate']"),
        (["--param", "min_metric=high"], None, "parameter 'min_metric' expects a number"),
        (["--param", "train_ratio=most"], None, "parameter 'train_ratio' expects a number"),
        ([], ("gs://my-bucket/runs", "gs:/my-bucket/runs"), "is not a Cloud Storage URI"),
        ([], ("gs://my-bucket/runs", "s3://my-bucket/runs"), "is not a Cloud Storage URI"),
        ([], ("test-project", ""), "missing project"),
    ],
)  # fmt: skip
def test_clear_errors(template, fake, capsys, extra, replace, message):
    args = base_args(template, fake, *extra)
    if replace:
        args = [replace[1] if a == replace[0] else a for a in args]
    rc = submit.main(args)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert fake.requests == []


def test_missing_required_parameter_is_named(template, fake, capsys):
    args = base_args(template, fake)
    i = args.index("source_uri=bq://src-project.sales.orders")
    del args[i - 1 : i + 1]
    assert submit.main(args) == 2
    assert "missing required pipeline parameter(s) ['source_uri']" in capsys.readouterr().err


def test_config_file_supplies_flags_and_parameters(template, fake, tmp_path):
    FakePipelineJobs.install(fake)
    config = tmp_path / "run.yaml"
    config.write_text(
        "project: test-project\npipeline_root: gs://cfg-bucket/root\n"
        "labels: {owner: data-team}\nparameters:\n  min_metric: 0.5\n  hyperparameters: {epochs: 4}\n"
    )
    args = base_args(template, fake)[6:]  # no --project/--region/--pipeline-root on the CLI
    rc = submit.main(["--config", str(config), *args])
    assert rc == 0
    [create] = fake.calls("POST", "/pipelineJobs")
    assert create.body["runtimeConfig"]["gcsOutputDirectory"] == "gs://cfg-bucket/root"
    params = create.body["runtimeConfig"]["parameterValues"]
    assert params["min_metric"] == 0.5
    assert json.loads(params["hyperparameters"]) == {"epochs": 4}  # a mapping becomes JSON
    assert create.body["labels"]["owner"] == "data-team"


def test_compiles_when_no_template_and_custom_job_runs_as_the_pipeline(template, fake, capsys):
    args = base_args(
        template, fake, "--dry-run", "--service-account", "sa@p.iam", "--replica-count", "2"
    )
    i = args.index("--template")
    del args[i : i + 2]
    assert submit.main(args) == 0
    out = capsys.readouterr().out
    assert f"# training: custom job, 2 x n1-standard-4, image {PROJECT_IMAGE}\n" in out
    spec = printed_request(out)["pipelineJob"]["pipelineSpec"]
    params = spec["components"]["comp-train"]["inputDefinitions"]["parameters"]
    assert params["service_account"]["defaultValue"] == "sa@p.iam"
    assert [p["replica_count"] for p in params["worker_pool_specs"]["defaultValue"]] == [1, 1]


def test_at_file_parameter_sends_the_file_text(template, fake, tmp_path):
    FakePipelineJobs.install(fake)
    features = tmp_path / "features.yaml"
    features.write_text("label: y\nkey: id\nnumeric: [x1]\n")
    hyper = tmp_path / "hyper.json"
    hyper.write_text('{"epochs": 5}')
    args = base_args(template, fake, "--param", f"hyperparameters=@{hyper}")
    args[args.index(f"feature_config={FEATURES}")] = f"feature_config=@{features}"
    assert submit.main(args) == 0
    [create] = fake.calls("POST", "/pipelineJobs")
    params = create.body["runtimeConfig"]["parameterValues"]
    assert params["feature_config"] == features.read_text()
    assert params["hyperparameters"] == '{"epochs": 5}'


def test_display_and_schedule_names_default_to_the_pipeline_name(template, fake, capsys):
    assert submit.main(base_args(template, fake, "--dry-run", "--schedule", "0 3 * * *")) == 0
    request = printed_request(capsys.readouterr().out)
    assert request["schedule"]["displayName"] == "imbalanced-training-schedule"
    job = request["schedule"]["createPipelineJobRequest"]["pipelineJob"]
    assert job["displayName"] == "imbalanced-training"
    assert request["parent"] == LOCATION
    args = base_args(template, fake, "--dry-run", "--display-name", "nightly", "--job-id", "j-1")
    assert submit.main(args) == 0
    request = printed_request(capsys.readouterr().out)
    assert request["pipelineJob"]["displayName"] == "nightly"
    assert request["pipelineJobId"] == "j-1"
    assert "serviceAccount" not in request["pipelineJob"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--labels", "Team=ml"], "--labels key 'Team' must start with a lowercase letter"),
        (["--labels", "team=ML"], "--labels team='ML': the value may hold only lowercase"),
        (["--labels", f"team={'x' * 64}"], "the value is 64 characters long; at most 63"),
        (["--labels", ",".join(f"k{i}=v" for i in range(65))], "at most 64 labels"),
        (["--labels", "team"], "--labels 'team' must look like NAME=VALUE"),
        (["--param", "source_uri"], "--param 'source_uri' must look like NAME=VALUE"),
        (["--param", "feature_config=@/nonexistent/f.yaml"], "parameter 'feature_config': cannot read"),
        (["--job-id", "Bad_Id"], "the Vertex AI SDK refuses the pipeline job"),
        (["--poll-seconds", "0"], "--poll-seconds must be > 0"),
    ],
)  # fmt: skip
def test_user_errors_end_in_one_line(template, fake, capsys, extra, message):
    assert submit.main(base_args(template, fake, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert fake.requests == []


def test_a_template_that_is_not_a_pipeline_is_one_line(template, fake, capsys, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1\n")
    args = base_args(template, fake)
    args[args.index(str(template))] = str(broken)
    assert submit.main(args) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: pipeline {str(broken)!r} is not valid YAML")
        and err.count("\n") == 1
    )
    args[args.index(str(broken))] = str(tmp_path / "missing.yaml")
    assert submit.main(args) == 2
    assert "does not exist" in capsys.readouterr().err


def parsed(*argv):
    return submit.build_parser().parse_args(list(argv))


def test_options_config_fills_what_the_command_line_left_out(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "project: cfg-project\nregion: europe-west4\npipeline_root: gs://cfg/root\n"
        "display_name: from-config\nimage: cfg/image:1\nservice_account: sa@cfg.iam\n"
        "labels: {owner: cfg, env: cfg}\nparameters: {min_metric: 0.7, gate_metric: pr_auc}\n"
    )
    options = options_from_args(
        parsed(
            "--config", str(config), "--region", "us-east1", "--labels", "env=cli",
            "--param", "min_metric=0.9", "--replica-count", "2",
        )
    )  # fmt: skip
    assert options.project == "cfg-project" and options.pipeline_root == "gs://cfg/root"
    assert options.region == "us-east1"  # the command line wins
    assert options.display_name == "from-config"
    assert options.image == "cfg/image:1"
    assert options.labels == {"owner": "cfg", "env": "cli"}
    assert options.parameters == {"min_metric": "0.9", "gate_metric": "pr_auc"}
    # the custom job runs as the pipeline does unless told otherwise
    assert options.vertex_training.service_account == "sa@cfg.iam"
    assert options.vertex_training.replica_count == 2
    assert options.derived_parameters() == {
        "registry_uri": "vertex://cfg-project/us-east1",
        "staging_root": "gs://cfg/root/batch_staging",
        "billing_project": "cfg-project",
    }
    assert options.location_path == "projects/cfg-project/locations/us-east1"


def test_options_with_a_template_ignore_the_custom_job_flags(template):
    options = options_from_args(
        parsed(
            "--project", PROJECT, "--pipeline-root", "gs://bkt/r", "--template", str(template),
            "--reduction-server-count", "2",  # would be refused when compiling
        )
    )  # fmt: skip
    assert options.vertex_training is None and options.template == template
    assert options.region == "us-central1" and options.enable_caching is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"project": "Bad_Project"}, "is not a valid project id"),
        ({"project": ""}, "missing project"),
        ({"pipeline_root": ""}, "missing --pipeline-root"),
        ({"pipeline_root": "gs://UPPER/x"}, "is not a Cloud Storage URI"),
        ({"template": "/nonexistent.yaml"}, "does not exist"),
    ],
)
def test_options_refuse_bad_settings(fields, message):
    with pytest.raises(PipelineInputError, match=message):
        SubmitOptions(**{"project": PROJECT, "pipeline_root": "gs://bkt/r", **fields})


def test_console_url_from_the_resource_name():
    name = "projects/p-1/locations/europe-west4/pipelineJobs/run-7"
    assert console_url(name) == (
        "https://console.cloud.google.com/vertex-ai/locations/europe-west4/pipelines/runs/run-7"
        "?project=p-1"
    )
    with pytest.raises(ValueError, match="not a pipeline job resource name"):
        console_url("projects/p/locations/l/models/1")


def test_batch_prediction_pipeline_is_compiled_and_its_parameters_derived(template, fake, capsys):
    args = base_args(template, fake, "--dry-run", "--pipeline", "batch_prediction_pipeline")
    del args[args.index("--template") : args.index("--template") + 2]
    args = [a for a in args if a not in ("--param", "source_uri=bq://src-project.sales.orders",
                                         f"feature_config={FEATURES}")]  # fmt: skip
    args += ["--param", "input_uri=bq://p.d.scored", "--param", "output_location=bq://p.d",
             "--param", "model_name=d.t-y"]  # fmt: skip
    assert submit.main(args) == 0
    request = printed_request(capsys.readouterr().out)
    job = request["pipelineJob"]
    assert job["displayName"] == job["pipelineSpec"]["pipelineInfo"]["name"]
    params = job["runtimeConfig"]["parameterValues"]
    assert params["registry_uri"] == f"vertex://{PROJECT}/us-central1"
    assert params["staging_root"] == "gs://my-bucket/runs/batch_staging"
    assert params["input_uri"] == "bq://p.d.scored"


def test_dry_run_lists_every_problem_of_the_values_at_once(template, fake, capsys):
    bad_features = json.dumps({"lable": "y", "label": "y", "key": "id"})
    args = base_args(
        template, fake, "--dry-run",
        "--param", "tolerance=nan",
        "--param", "min_metric=inf",
        "--param", "train_ratio=0.9",  # 0.9 + 0.1 + 0.1 = 1.1
        "--param", "imbalance_mode=smote",
        "--param", "model_display_name= padded",
        "--param", 'model_labels={"Team": "x"}',
        "--param", "output_dataset=a.b.c",
        "--param", "registry_uri=local:///tmp/registry",
        "--param", "hyperparameters={\"epochs\": 0}",
    )  # fmt: skip
    args[args.index("source_uri=bq://src-project.sales.orders")] = (
        "source_uri=src-project.sales.orders"
    )
    args[args.index(f"feature_config={FEATURES}")] = f"feature_config={bad_features}"
    assert submit.main(args) == 2
    err = capsys.readouterr().err.splitlines()
    expected = [
        "parameter 'tolerance' must be a finite number, got 'nan'",
        "parameter 'min_metric' must be a finite number, got 'inf'",
        "parameter 'source_uri': 'src-project.sales.orders' is not a BigQuery table: use "
        "bq://PROJECT.DATASET.TABLE",
        "parameter 'feature_config': unknown feature config keys ['lable']",
        "parameter 'hyperparameters': ",
        "parameter 'imbalance_*': unknown imbalance mode 'smote'",
        "parameters train_ratio, validation_ratio, test_ratio: (0.9, 0.1, 0.1) sums to 1.1, not 1",
        "parameter 'model_display_name': model display name ' padded' has leading/trailing",
        "parameter 'model_labels': model_labels key 'Team' must start with a lowercase letter",
        "parameter 'registry_uri': 'local:///tmp/registry' is not a registry for Vertex AI runs",
        "parameter 'output_dataset': 'a.b.c' must be [project.]dataset",
    ]
    assert len(err) == len(expected), err
    for line, start in zip(err, expected, strict=True):
        assert line.startswith(f"error: {start}"), (line, start)
    assert fake.requests == []


def test_dry_run_works_offline_without_credentials(template, tmp_path):
    """No credentials anywhere, metadata server unreachable: the dry run still prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_"))}
    env.update(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
               GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9",
               PYTHONPATH=str(ROOT))  # fmt: skip
    common = ["--project", PROJECT, "--pipeline-root", "gs://my-bucket/runs",
              "--template", str(template), "--param", "source_uri=bq://p.d.t",
              "--param", f"feature_config={FEATURES}"]  # fmt: skip
    script = (
        "import sys, submit\n"
        "print('DRY', submit.main(sys.argv[1:] + ['--dry-run']))\n"
        "print('REAL', submit.main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *common],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "DRY 0" in done.stdout and "REAL 2" in done.stdout, done.stderr[-2000:]
    request = printed_request(done.stdout.split("DRY 0")[0])
    assert request["pipelineJob"]["runtimeConfig"]["parameterValues"]["source_uri"] == "bq://p.d.t"
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: no Google Cloud credentials found: run `gcloud auth application-default login` "
        "or set GOOGLE_APPLICATION_CREDENTIALS (--dry-run needs none)"
    )


def test_placeholder_image_is_warned_about(template, fake, capsys, tmp_path):
    spec = yaml.safe_load(template.read_text())
    text = yaml.safe_dump(spec).replace(IMAGE, PROJECT_IMAGE)
    placeholder = tmp_path / "placeholder.yaml"
    placeholder.write_text(text)
    args = base_args(template, fake, "--dry-run")
    args[args.index(str(template))] = str(placeholder)
    assert submit.main(args) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(
        f"warning: the pipeline runs the placeholder image {PROJECT_IMAGE}, which does not exist"
    )
    assert printed_request(captured.out)["method"] == "CreatePipelineJob"


def test_experiment_with_schedule_is_refused(template, fake, capsys):
    args = base_args(template, fake, "--schedule", "0 3 * * 1", "--experiment", "my-exp")
    assert submit.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --experiment cannot be used with --schedule: ")
    assert "neither the Schedule nor the PipelineJob resource has an experiment field" in err
    assert err.count("\n") == 1 and fake.requests == []


def test_the_installed_sdk_and_api_have_no_experiment_for_schedules():
    """The refusal above rests on this: check it again when the SDK is upgraded."""
    import inspect

    from google.cloud.aiplatform import PipelineJob
    from google.cloud.aiplatform_v1.types import PipelineJob as PipelineJobProto
    from google.cloud.aiplatform_v1.types import Schedule

    assert "experiment" not in inspect.signature(PipelineJob.create_schedule).parameters
    assert "experiment" in inspect.signature(PipelineJob.submit).parameters
    for message in (Schedule, PipelineJobProto):
        assert not [f for f in message.meta.fields if "experiment" in f]


def test_one_kms_key_encrypts_the_job_and_reaches_every_step(keyed_template, fake):
    FakePipelineJobs.install(fake)
    assert submit.main(base_args(keyed_template, fake, "--kms-key", KEY)) == 0
    [create] = fake.calls("POST", "/pipelineJobs")
    assert create.body["encryptionSpec"]["kmsKeyName"] == KEY
    assert create.body["runtimeConfig"]["parameterValues"]["kms_key"] == KEY
    # prepare-data and register get the key; train is a plain task here (the job's key covers
    # it; the custom job's wiring is tested in test_compilation)
    assert kms_key_gaps(create.body["pipelineSpec"]) == []


def test_a_key_compiled_into_the_template_also_encrypts_the_job(keyed_template, fake, tmp_path):
    FakePipelineJobs.install(fake)
    spec = yaml.safe_load(keyed_template.read_text())
    spec["root"]["inputDefinitions"]["parameters"]["kms_key"]["defaultValue"] = KEY
    compiled = tmp_path / "keyed.yaml"
    compiled.write_text(yaml.safe_dump(spec))
    args = base_args(keyed_template, fake)
    args[args.index(str(keyed_template))] = str(compiled)
    assert submit.main(args) == 0
    [create] = fake.calls("POST", "/pipelineJobs")
    assert create.body["encryptionSpec"]["kmsKeyName"] == KEY  # compile.py --kms-key


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--kms-key", KEY.replace("us-central1", "europe-west4")],
         "--kms-key: the key is in location 'europe-west4' but the job runs in 'us-central1'"),
        (["--kms-key", "projects/p/cryptoKeys/k"], "--kms-key: 'projects/p/cryptoKeys/k' is not "
         "a Cloud KMS key"),
        (["--kms-key", KEY, "--param", f"kms_key={KEY}x"], f"--kms-key {KEY!r} differs from "
         f"--param kms_key={KEY + 'x'!r}"),
        (["--kms-key", KEY, "--training-kms-key", KEY + "x"], "--training-kms-key "),
    ],
)  # fmt: skip
def test_kms_key_problems_are_one_line_each(keyed_template, fake, capsys, extra, message):
    assert submit.main(base_args(keyed_template, fake, *extra)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert err and err[0].startswith(f"error: {message}"), err
    assert fake.requests == []


def test_a_key_that_would_not_reach_a_step_is_refused(template, fake, capsys):
    spec = yaml.safe_load(template.read_text())
    gaps = kms_key_gaps(spec)
    assert (
        "register (the registered model)" not in gaps
        and "train (the training custom job)" not in gaps
    )
    unwired = copy.deepcopy(spec)
    register = unwired["components"]["comp-condition-1"]["dag"]["tasks"]["register"]
    del register["inputs"]["parameters"]["kms_key"]
    assert kms_key_gaps(unwired) == [*gaps, "register (the registered model)"]
    if gaps:  # today: the prepare step takes no kms_key (requested of its owner)
        assert submit.main(base_args(template, fake, "--dry-run", "--kms-key", KEY)) == 2
        err = capsys.readouterr().err
        assert err.startswith(
            "error: --kms-key: the key does not reach step prepare-data (the BigQuery split "
            "tables): its component takes no kms_key input"
        )
