"""compile.py and pipelines/compilation.py: the YAML validates offline and has the task graph we designed."""

import copy
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl

import compile as compile_cli
from components.image import PROJECT_IMAGE
from pipelines import compilation
from pipelines.compilation import PIPELINES, PipelineTarget, compile_pipelines, gpu_image_for
from pipelines.submission import kms_key_gaps
from pipelines.training_pipeline import build_pipeline
from pipelines.vertex_training import REDUCTION_SERVER_IMAGE, VertexTrainingConfig
from vertex_imbalanced.errors import PipelineInputError, PipelineSpecError
from vertex_imbalanced.training.strategy import (
    collective_implementation,
    training_cluster,
    worker_info,
)

ROOT = Path(__file__).resolve().parents[2]
GCPC_IMAGE_PREFIX = "gcr.io/ml-pipeline/google-cloud-pipeline-components"
IMAGE = "europe-docker.pkg.dev/acme/ml/trainer:1.2.3"
KEY = "projects/p/locations/us-central1/keyRings/r/cryptoKeys/k"


@pytest.fixture(scope="module")
def default_spec(tmp_path_factory):
    out = tmp_path_factory.mktemp("default")
    assert compile_cli.main(["--output-dir", str(out), "--pipeline", "training_pipeline"]) == 0
    return yaml.safe_load((out / "training_pipeline.yaml").read_text())


@pytest.fixture(scope="module")
def distributed(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    # The "done when" command, plus the job settings.
    argv = [
        "--output-dir", str(out), "--image", IMAGE, "--pipeline", "training_pipeline",
        "--replica-count", "4", "--accelerator-type", "NVIDIA_TESLA_T4",
        "--accelerator-count", "1", "--reduction-server-count", "2",
        "--machine-type", "n1-standard-16",
        "--training-service-account", "trainer@p.iam.gserviceaccount.com",
        "--training-network", "projects/123/global/networks/vpc",
        "--kms-key", KEY,
    ]  # fmt: skip
    assert compile_cli.main(argv) == 0
    path = out / "training_pipeline.yaml"
    return yaml.safe_load(path.read_text()), path.read_text()


def tasks(spec):
    return spec["root"]["dag"]["tasks"]


def train_params(spec):
    return spec["components"]["comp-train"]["inputDefinitions"]["parameters"]


def test_cli_writes_every_pipeline_and_prints_the_paths(tmp_path, capsys):
    out = tmp_path / "out"
    assert compile_cli.main(["--output-dir", str(out), "--image", IMAGE]) == 0
    printed = capsys.readouterr().out.split()
    names = ["training_pipeline.yaml", "batch_prediction_pipeline.yaml"]
    assert printed == [str(out / name) for name in names]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for path in printed:
        compilation.validate(Path(path))
        assert PROJECT_IMAGE not in Path(path).read_text()
    batch = yaml.safe_load((out / "batch_prediction_pipeline.yaml").read_text())
    # the Dataflow workers' image is a parameter default: --image reaches it too
    assert (
        batch["root"]["inputDefinitions"]["parameters"]["dataflow_image"]["defaultValue"] == IMAGE
    )


def test_replace_image_covers_executors_pools_and_parameter_defaults():
    old, new = "old/image:1", "new/image:2"
    spec = {
        "deploymentSpec": {
            "executors": {"a": {"container": {"image": old}}, "b": {"container": {"image": "x"}}}
        },
        "root": {"inputDefinitions": {"parameters": {"img": {"defaultValue": old}}}},
        "components": {
            "comp-t": {
                "inputDefinitions": {
                    "parameters": {
                        "worker_pool_specs": {
                            "defaultValue": [
                                {"container_spec": {"image_uri": old}},
                                {"container_spec": {"image_uri": "reducer"}},
                            ]
                        },
                        "other": {"defaultValue": "keep"},
                    }
                }
            }
        },
    }
    assert compilation.replace_image(spec, old, new) == 3
    assert old not in str(spec) and str(spec).count(new) == 3
    assert "reducer" in str(spec) and "keep" in str(spec) and "'x'" in str(spec)


def test_unknown_pipeline_name_is_refused():
    with pytest.raises(
        PipelineInputError, match="unknown pipeline 'nope'; known: training_pipeline"
    ):
        compilation.pipeline_target("nope")


def test_task_graph_names_dependencies_and_display_names(default_spec):
    t = tasks(default_spec)
    assert set(t) == {"prepare-data", "train", "evaluate", "lookup-champion", "gate", "condition-1"}
    deps = {name: set(task.get("dependentTasks", [])) for name, task in t.items()}
    assert deps["prepare-data"] == set()
    # the champion is re-scored on this run's test split: after prepare, beside train
    assert deps["lookup-champion"] == {"prepare-data"}
    assert deps["train"] == {"prepare-data"}
    assert deps["evaluate"] == {"train", "prepare-data", "lookup-champion"}  # the model name
    assert deps["gate"] == {"evaluate", "lookup-champion"}
    # register uses their outputs (compare-and-set: the champion version the lookup saw)
    assert deps["condition-1"] == {"gate", "train", "evaluate", "prepare-data", "lookup-champion"}
    names = {name: task["taskInfo"]["name"] for name, task in t.items()}
    assert names == {
        "prepare-data": "Prepare data",
        "train": "Train",
        "evaluate": "Evaluate",
        "lookup-champion": "Look up champion",
        "gate": "Gate",
        "condition-1": "gate-passed",
    }
    inner = default_spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(inner) == {"register"}
    assert inner["register"]["taskInfo"]["name"] == "Register"


def test_register_runs_only_if_the_gate_passed(default_spec):
    condition = tasks(default_spec)["condition-1"]["triggerPolicy"]["condition"]
    assert re.fullmatch(
        r"inputs\.parameter_values\['pipelinechannel--gate-passed'\] == true", condition
    )
    inputs = tasks(default_spec)["condition-1"]["inputs"]["parameters"]
    assert inputs["pipelinechannel--gate-passed"]["taskOutputParameter"] == {
        "outputParameterKey": "passed",
        "producerTask": "gate",
    }
    champion = tasks(default_spec)["gate"]["inputs"]["parameters"]["champion_metrics"]
    assert champion["taskOutputParameter"]["producerTask"] == "lookup-champion"


def test_champion_lookup_evaluate_gate_and_register_are_wired(default_spec):
    t = tasks(default_spec)
    root = "componentInputParameter"
    lookup = t["lookup-champion"]["inputs"]
    assert lookup["parameters"]["model_name"] == {root: "model_display_name"}
    assert lookup["parameters"]["source_uri"] == {root: "source_uri"}
    assert lookup["artifacts"]["prepared_data"]["taskOutputArtifact"]["producerTask"] == (
        "prepare-data"
    )
    evaluate = t["evaluate"]["inputs"]["parameters"]
    assert evaluate["baselines"] == {root: "evaluate_baselines"}
    assert evaluate["baseline_max_rows"] == {root: "baseline_max_rows"}
    assert evaluate["dataset"] == {root: "source_uri"}
    assert evaluate["model_name"]["taskOutputParameter"] == {
        "outputParameterKey": "model_name",
        "producerTask": "lookup-champion",
    }
    assert evaluate["run_name"]["runtimeValue"]["constant"] == "{{$.pipeline_job_name}}"
    gate = t["gate"]["inputs"]["parameters"]
    assert gate["baseline_check"] == {root: "gate_baseline_check"}
    assert gate["baseline_min_tolerance"] == {root: "gate_baseline_min_tolerance"}
    register = default_spec["components"]["comp-condition-1"]["dag"]["tasks"]["register"]
    params = register["inputs"]["parameters"]
    # compare-and-set: the version the lookup saw and the gate's own rule
    assert params["champion_version"] == {root: "pipelinechannel--lookup-champion-version"}
    assert params["model_display_name"] == {root: "pipelinechannel--lookup-champion-model_name"}
    for name, source in [("gate_metric", "gate_metric"), ("min_metric", "min_metric"),
                         ("tolerance", "tolerance"), ("kms_key", "kms_key")]:  # fmt: skip
        assert params[name] == {root: f"pipelinechannel--{source}"}, name
    assert "prepared_data" in register["inputs"]["artifacts"]
    defaults = default_spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["model_display_name"]["defaultValue"] == ""  # derived from table and label
    assert defaults["gate_baseline_check"]["defaultValue"] is True
    assert defaults["kms_key"]["defaultValue"] == "" and "kms_key" in params


def test_caching_retries_and_resources(default_spec):
    t = tasks(default_spec)
    caching = {n: task.get("cachingOptions", {}).get("enableCache", False) for n, task in t.items()}
    assert caching["prepare-data"] is False
    assert caching["lookup-champion"] is False
    assert caching["train"] is True and caching["evaluate"] is True
    inner = default_spec["components"]["comp-condition-1"]["dag"]["tasks"]["register"]
    assert not inner["cachingOptions"].get("enableCache", False)
    for name in ("prepare-data", "train", "evaluate", "lookup-champion"):
        assert t[name]["retryPolicy"]["maxRetryCount"] >= 1, name
    assert inner["retryPolicy"]["maxRetryCount"] >= 1
    executors = default_spec["deploymentSpec"]["executors"]
    for name in ("prepare-data", "evaluate", "gate", "lookup-champion", "register"):
        resources = executors[f"exec-{name}"]["container"]["resources"]
        assert resources["cpuLimit"] > 0 and resources["memoryLimit"] > 0, name


def test_parameters_have_types_and_defaults(default_spec):
    params = default_spec["root"]["inputDefinitions"]["parameters"]
    required = {n for n, p in params.items() if "defaultValue" not in p and not p.get("isOptional")}
    assert required == {"source_uri", "feature_config", "registry_uri"}
    assert [params[f"{s}_ratio"]["defaultValue"] for s in ("train", "validation", "test")] == [
        0.8,
        0.1,
        0.1,
    ]
    assert params["min_metric"]["parameterType"] == "NUMBER_DOUBLE"
    assert params["hyperparameters"]["parameterType"] == "STRING"
    assert params["imbalance_mode"]["defaultValue"] == "downsample_upweight"


def test_default_train_step_is_one_cpu_custom_job(default_spec):
    executor = default_spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert executor["image"].startswith(GCPC_IMAGE_PREFIX)
    [pool] = train_params(default_spec)["worker_pool_specs"]["defaultValue"]
    assert pool["replica_count"] == 1
    assert pool["machine_spec"] == {"machine_type": "n1-standard-4"}
    assert pool["container_spec"]["image_uri"] == PROJECT_IMAGE
    assert "--executor_input" in pool["container_spec"]["args"]


def test_gpu_reduction_server_pools_and_job_settings(distributed):
    spec, _ = distributed
    params = train_params(spec)
    chief, workers, reducers = params["worker_pool_specs"]["defaultValue"]
    accel = {"machine_type": "n1-standard-16", "accelerator_type": "NVIDIA_TESLA_T4",
             "accelerator_count": 1}  # fmt: skip
    assert chief["replica_count"] == 1 and chief["machine_spec"] == accel
    assert workers["replica_count"] == 3 and workers["machine_spec"] == accel
    # pool 0 and 1 run the GPU image (CUDA, NCCL, the Reduction Server plugin)
    assert chief["container_spec"]["image_uri"] == f"{IMAGE}-gpu" == gpu_image_for(IMAGE)
    assert workers["container_spec"] == chief["container_spec"]
    assert "--executor_input" in chief["container_spec"]["args"]
    assert reducers["replica_count"] == 2
    assert reducers["machine_spec"] == {"machine_type": "n1-highcpu-16"}
    assert reducers["container_spec"] == {"image_uri": REDUCTION_SERVER_IMAGE}
    assert REDUCTION_SERVER_IMAGE == (
        "us-docker.pkg.dev/vertex-ai-restricted/training/reductionserver:latest"
    )
    assert params["service_account"]["defaultValue"] == "trainer@p.iam.gserviceaccount.com"
    assert params["network"]["defaultValue"] == "projects/123/global/networks/vpc"


def test_one_kms_key_is_a_parameter_wired_into_job_tables_and_model(distributed):
    spec, _ = distributed
    # compile.py --kms-key is the default of the pipeline parameter (submit can set it)
    assert spec["root"]["inputDefinitions"]["parameters"]["kms_key"]["defaultValue"] == KEY
    train = tasks(spec)["train"]["inputs"]["parameters"]
    assert train["encryption_spec_key_name"] == {"componentInputParameter": "kms_key"}
    register = spec["components"]["comp-condition-1"]["dag"]["tasks"]["register"]
    assert register["inputs"]["parameters"]["kms_key"] == {
        "componentInputParameter": "pipelinechannel--kms_key"
    }
    # every step that creates a resource gets the key, once its component takes one
    prepare_takes_key = "kms_key" in spec["components"]["comp-prepare-data"][
        "inputDefinitions"]["parameters"]  # fmt: skip
    assert kms_key_gaps(spec) == ([] if prepare_takes_key else
                                  ["prepare-data (the BigQuery split tables)"])  # fmt: skip


def test_compiled_pools_agree_with_tf_config_handling_and_nccl(distributed):
    spec, _ = distributed
    chief, workers, reducers = train_params(spec)["worker_pool_specs"]["defaultValue"]
    hosts = {
        "chief": [f"chief-{i}:2222" for i in range(int(chief["replica_count"]))],
        "worker": [f"worker-{i}:2222" for i in range(int(workers["replica_count"]))],
        "ps": [f"reducer-{i}:2222" for i in range(int(reducers["replica_count"]))],
    }  # Vertex puts pool 2 (the reducers) under "ps"
    seen = []
    for task_type, addresses in hosts.items():
        for index in range(len(addresses)):
            tf_config = {"cluster": hosts, "task": {"type": task_type, "index": index}}
            assert "ps" not in training_cluster(tf_config)["cluster"]
            info = worker_info(tf_config)
            assert info.count == 4  # the training replicas only
            if task_type != "ps":
                seen.append(info.index)
    assert sorted(seen) == [0, 1, 2, 3]  # one shard per training replica, none for reducers
    # GPU replicas all-reduce with NCCL (what the Reduction Server plugin serves)
    assert collective_implementation(int(chief["machine_spec"]["accelerator_count"])) == "NCCL"
    assert collective_implementation(0) == "AUTO"


def test_train_step_shards_for_four_workers_from_a_single_stream():
    from fakes.arrow_tables import make_wide_table
    from vertex_imbalanced.config import FeatureSpec
    from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
    from vertex_imbalanced.training.trainer import _training_stats

    table = make_wide_table(400, n_float=2, n_string=0, seed=1, key=True)
    spec = FeatureSpec(label="label", numeric=("f00", "f01"), key="key")
    source = ArrowTableSource(table, num_streams=1, batch_rows=64)  # BigQuery may return one
    _, shard_rows = _training_stats(
        source, spec, ("0", "1"), 4
    )  # was: "worker 1 of 4 gets no stream"
    assert sum(shard_rows) == 400 and min(shard_rows) > 0


def test_image_is_injected_into_every_executor(distributed):
    spec, text = distributed
    images = {
        name: e["container"]["image"] for name, e in spec["deploymentSpec"]["executors"].items()
    }
    assert images.pop("exec-train").startswith(GCPC_IMAGE_PREFIX)  # the custom-job launcher
    assert set(images) == {f"exec-{n}" for n in
                           ("prepare-data", "evaluate", "lookup-champion", "gate", "register")}  # fmt: skip
    assert set(images.values()) == {IMAGE}
    assert PROJECT_IMAGE not in text


def test_plain_train_task_without_custom_job(tmp_path):
    assert compile_cli.main(["--output-dir", str(tmp_path), "--no-custom-job"]) == 0
    spec = yaml.safe_load((tmp_path / "training_pipeline.yaml").read_text())
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["image"] == PROJECT_IMAGE
    assert train["resources"]["cpuLimit"] >= 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(pipelineInfo={"name": "x", "unknownField": 1}), "unknownField"),
        (lambda s: s.pop("root"), "the Vertex AI SDK refuses it: no field 'root'"),
        (lambda s: s.pop("pipelineInfo"), "no field 'pipelineInfo'"),
    ],
)
def test_validation_raises_the_error_type_it_documents(tmp_path, default_spec, change, message):
    broken = copy.deepcopy(default_spec)
    change(broken)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(PipelineSpecError, match=message):
        compilation.validate(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [("a: [1\n", "is not valid YAML"), ("- 1\n", "does not hold a YAML mapping")],
)
def test_validation_of_a_file_that_is_not_a_spec(tmp_path, text, message):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(PipelineSpecError, match=message):
        compilation.validate(path)
    with pytest.raises(PipelineSpecError, match="cannot read pipeline"):
        compilation.validate(tmp_path / "missing.yaml")


@dsl.component(base_image="python:3.11-slim")
def _echo(text: str) -> str:
    return text


@dsl.pipeline(name="other-image")
def _other_image_pipeline(text: str = "x") -> None:
    _echo(text=text)


def test_a_failing_pipeline_leaves_the_output_directory_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "training_pipeline.yaml").write_text("old")
    targets = [PIPELINES[0], PipelineTarget("other", lambda _vt: _other_image_pipeline)]
    with pytest.raises(PipelineSpecError, match="other: no executor uses .*cannot inject"):
        compile_pipelines(out, image=IMAGE, pipelines=targets)
    assert [p.name for p in out.iterdir()] == ["training_pipeline.yaml"]
    assert (out / "training_pipeline.yaml").read_text() == "old"


def test_every_pipeline_is_compiled_to_its_own_file(tmp_path):
    targets = [*PIPELINES, PipelineTarget("other", lambda _vt: _other_image_pipeline)]
    written = compile_pipelines(tmp_path, pipelines=targets)
    assert written == [tmp_path / f"{t.name}.yaml" for t in targets]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    other = yaml.safe_load((tmp_path / "other.yaml").read_text())
    assert other["pipelineInfo"]["name"] == "other-image"
    assert "git_commit" not in other["root"]["inputDefinitions"]["parameters"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--reduction-server-count", "2"],
         "a Reduction Server pool needs at least 2 training replicas (replica_count=1)"),
        (["--replica-count", "4", "--reduction-server-count", "2"],
         "a Reduction Server needs GPU workers (it serves NCCL all-reduce): set "
         "--accelerator-type and --accelerator-count, or drop --reduction-server-count"),
        (["--gpu-image", "x/y:1"],
         "--gpu-image is used only with --accelerator-type (CPU replicas run --image)"),
        (["--accelerator-type", "NVIDIA_TESLA_T4", "--image", "r/t@sha256:abc"],
         "--image 'r/t@sha256:abc' is pinned by digest: pass --gpu-image for the GPU replicas"),
        (["--no-custom-job", "--accelerator-type", "NVIDIA_TESLA_T4"],
         "--no-custom-job runs train as an ordinary CPU task"),
        (["--kms-key", "projects/p/keyRings/r"], "--kms-key: 'projects/p/keyRings/r' is not a "
         "Cloud KMS key: use projects/P/locations/L/keyRings/R/cryptoKeys/K"),
        (["--kms-key", KEY, "--training-kms-key", KEY + "2"], "--training-kms-key "),
    ],
)  # fmt: skip
def test_cli_turns_a_user_error_into_one_line(tmp_path, capsys, argv, message):
    assert compile_cli.main(["--output-dir", str(tmp_path), *argv]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert list(tmp_path.iterdir()) == []


def test_gpu_image_is_the_tag_with_gpu_appended():
    assert gpu_image_for("r.io/p/trainer:0.1.0") == "r.io/p/trainer:0.1.0-gpu"
    assert gpu_image_for("localhost:5000/trainer") == "localhost:5000/trainer:latest-gpu"


def test_gpu_dockerfile_swaps_tensorflow_for_its_cuda_wheels_and_adds_reduction_server():
    gpu = (ROOT / "Dockerfile.gpu").read_text()
    cpu = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG BEAM_IMAGE=(\S+)$", cpu, re.M).group(1)
    assert f"ARG BEAM_IMAGE={base}" in gpu  # same base, same Beam as the lock
    assert "sed -n 's/^tensorflow-cpu==//p' requirements.lock" in gpu
    assert re.search(r"^tensorflow-cpu==\S+$", (ROOT / "requirements.lock").read_text(), re.M)
    assert '"tensorflow[and-cuda]==${TF_VERSION}"' in gpu and "-c /tmp/constraints.txt" in gpu
    assert "https://packages.cloud.google.com/apt google-fast-socket main" in gpu
    assert "apt-get install -y --no-install-recommends google-reduction-server" in gpu
    assert "tf.test.is_built_with_cuda()" in gpu and "nvidia-nccl" in gpu
    assert "UNVERIFIED BUILD" in gpu


def test_retries_off_for_local_runs():
    spec = compile_to_dict(build_pipeline(None, retries=False))
    t = tasks(spec)
    assert all("retryPolicy" not in task for task in t.values())
    register = spec["components"]["comp-condition-1"]["dag"]["tasks"]["register"]
    assert "retryPolicy" not in register
    assert t["prepare-data"]["taskInfo"]["name"] == "Prepare data"


def compile_to_dict(pipeline):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        return yaml.safe_load(path.read_text())


def test_bad_settings_and_unwritable_output(tmp_path, capsys):
    with pytest.raises(PipelineInputError, match="at least 2 training replicas"):
        VertexTrainingConfig(reduction_server_count=2)
    with pytest.raises(PipelineInputError, match="needs GPU workers"):
        VertexTrainingConfig(replica_count=2, reduction_server_count=1)
    with pytest.raises(PipelineInputError, match="accelerator_count"):
        VertexTrainingConfig(accelerator_type="NVIDIA_TESLA_T4")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert compile_cli.main(["--output-dir", str(blocker / "out")]) == 2
    assert "cannot write to output directory" in capsys.readouterr().err


def test_dockerfile_installs_the_lock_then_the_project_without_deps():
    text = (ROOT / "Dockerfile").read_text()
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    # The base image (Beam's SDK image of the locked version) is checked in tests/test_packaging.py.
    sync = next(i for i, line in enumerate(lines) if "uv pip sync" in line)
    assert "requirements.lock" in lines[sync]
    assert any(line == "COPY requirements.lock ./" for line in lines[:sync])
    project = next(i for i, line in enumerate(lines) if "uv pip install" in line)
    assert project > sync and "--no-deps" in lines[project]
    assert "pip install -r requirements.in" not in text
    assert "MALLOC_TRIM_THRESHOLD_" in text
