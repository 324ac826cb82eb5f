"""run_parameters.py: --param parsing, @FILE values, type conversion, config merge (pure logic)."""

import pytest

from vertex_imbalanced.errors import InputProblemsError, PipelineInputError
from vertex_imbalanced.run_parameters import (
    RunConfig,
    convert_parameter,
    effective_values,
    kms_key_problem,
    merge_flags,
    parse_pairs,
    read_run_config,
    resolve_parameters,
    split_commas,
    template_parameters,
    value_problems,
)

DECLARED = {
    "source_uri": {"parameterType": "STRING"},
    "feature_config": {"parameterType": "STRING"},
    "registry_uri": {"parameterType": "STRING"},
    "min_metric": {"parameterType": "NUMBER_DOUBLE", "defaultValue": 0.5},
    "epochs": {"parameterType": "NUMBER_INTEGER", "defaultValue": 3},
    "strict": {"parameterType": "BOOLEAN", "defaultValue": False},
    "columns": {"parameterType": "LIST", "isOptional": True},
    "extra": {"parameterType": "STRUCT", "defaultValue": {}},
}


@pytest.mark.parametrize(
    ("kind", "given", "expected"),
    [
        ("STRING", "bq://p.d.t", "bq://p.d.t"),
        ("STRING", {"a": 1}, '{"a": 1}'),
        ("STRING", [1, 2], "[1, 2]"),
        ("STRING", 7, "7"),
        ("NUMBER_INTEGER", "42", 42),
        ("NUMBER_INTEGER", " -3 ", -3),
        ("NUMBER_INTEGER", 5, 5),
        ("NUMBER_DOUBLE", "0.25", 0.25),
        ("NUMBER_DOUBLE", 2, 2.0),
        ("BOOLEAN", "TRUE", True),
        ("BOOLEAN", "no", False),
        ("BOOLEAN", "0", False),
        ("BOOLEAN", True, True),
        ("LIST", '["a", "b"]', ["a", "b"]),
        ("LIST", ["a"], ["a"]),
        ("STRUCT", '{"epochs": 3}', {"epochs": 3}),
        ("STRUCT", {"epochs": 3}, {"epochs": 3}),
    ],
)
def test_conversion_to_the_template_type(kind, given, expected):
    converted = convert_parameter("p", kind, given)
    assert converted == expected and type(converted) is type(expected)


@pytest.mark.parametrize(
    ("kind", "given", "words"),
    [
        ("NUMBER_INTEGER", "1.5", "an integer"),
        ("NUMBER_INTEGER", True, "an integer"),
        ("NUMBER_INTEGER", 1.0, "an integer"),
        ("NUMBER_DOUBLE", "high", "a number"),
        ("NUMBER_DOUBLE", False, "a number"),
        ("BOOLEAN", "maybe", "true or false"),
        ("LIST", '{"a": 1}', "a JSON list"),
        ("LIST", "[1,", "a JSON list"),
        ("STRUCT", "[1]", "a JSON object"),
        ("TASK_CONFIG", "x", "TASK_CONFIG"),
    ],
)
def test_a_value_of_the_wrong_type_names_parameter_type_and_value(kind, given, words):
    with pytest.raises(PipelineInputError) as caught:
        convert_parameter("p", kind, given)
    assert str(caught.value) == f"parameter 'p' expects {words} ({kind}), got {given!r}"


def test_at_file_reads_text_for_strings_and_yaml_for_structs(tmp_path):
    features = tmp_path / "features.yaml"
    features.write_text("label: y\nkey: id\nnumeric: [x1, x2]\n")
    # A STRING parameter gets the file's text as is (the pipeline parses JSON or YAML).
    assert convert_parameter("feature_config", "STRING", f"@{features}") == features.read_text()
    assert convert_parameter("extra", "STRUCT", f"@{features}") == {
        "label": "y",
        "key": "id",
        "numeric": ["x1", "x2"],
    }
    columns = tmp_path / "columns.json"
    columns.write_text('["a", "b"]')
    assert convert_parameter("columns", "LIST", f"@{columns}") == ["a", "b"]
    number = tmp_path / "min.txt"
    number.write_text("0.75\n")
    assert convert_parameter("min_metric", "NUMBER_DOUBLE", f"@{number}") == 0.75


def test_at_file_errors_name_the_parameter_and_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(
        PipelineInputError,
        match=rf"parameter 'feature_config': cannot read '{missing}' \(No such file",
    ):
        convert_parameter("feature_config", "STRING", f"@{missing}")
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(
        PipelineInputError, match=rf"parameter 'extra': '{broken}' is not valid YAML"
    ):
        convert_parameter("extra", "STRUCT", f"@{broken}")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(PipelineInputError, match="parameter 'extra' expects a JSON object"):
        convert_parameter("extra", "STRUCT", f"@{listed}")


def test_resolve_converts_fills_derived_and_keeps_given_over_derived():
    values = resolve_parameters(
        DECLARED,
        {"source_uri": "bq://p.d.t", "feature_config": "{}", "epochs": "7", "strict": "yes"},
        {"registry_uri": "vertex://p/us-central1", "not_declared": "ignored"},
    )
    assert values == {
        "source_uri": "bq://p.d.t",
        "feature_config": "{}",
        "epochs": 7,
        "strict": True,
        "registry_uri": "vertex://p/us-central1",
    }
    given = {"source_uri": "s", "feature_config": "{}", "registry_uri": "local:///tmp/r"}
    assert resolve_parameters(DECLARED, given, {"registry_uri": "vertex://p/r"}) == given


def test_resolve_names_every_unknown_wrong_and_missing_parameter_at_once():
    with pytest.raises(InputProblemsError) as caught:
        resolve_parameters(DECLARED, {"learning_rate": "0.1", "zzz": "1", "epochs": "x"})
    unknown, wrong, missing = caught.value.problems
    assert unknown.startswith("unknown pipeline parameter(s) ['learning_rate', 'zzz'];")
    assert "the pipeline takes: columns, epochs, extra, feature_config" in unknown
    assert wrong == "parameter 'epochs' expects an integer (NUMBER_INTEGER), got 'x'"
    assert missing == (
        "missing required pipeline parameter(s) ['feature_config', 'registry_uri', "
        "'source_uri']: pass --param NAME=VALUE"
    )
    with pytest.raises(InputProblemsError) as caught:
        resolve_parameters(DECLARED, {"feature_config": "{}"})
    assert caught.value.problems == (
        "missing required pipeline parameter(s) ['registry_uri', 'source_uri']: "
        "pass --param NAME=VALUE",
    )


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity", float("nan")])
def test_a_number_must_be_finite(text):
    with pytest.raises(PipelineInputError) as caught:
        convert_parameter("tolerance", "NUMBER_DOUBLE", text)
    assert str(caught.value) == f"parameter 'tolerance' must be a finite number, got {text!r}"


GOOD = {
    "source_uri": "bq://data-project.sales.orders",
    "feature_config": '{"label": "y", "key": "id"}',
    "registry_uri": "vertex://my-project/us-central1",
    "train_ratio": 0.7,
    "validation_ratio": 0.2,
    "test_ratio": 0.1,
    "imbalance_mode": "downsample_upweight",
    "imbalance_max_ratio": 10.0,
    "imbalance_target_share": 0.0,
    "hyperparameters": "{}",
    "tolerance": 0.0,
    "model_display_name": "",
    "model_labels": '{"team": "ml"}',
    "output_dataset": "other-project.out",
    "kms_key": "projects/k/locations/us-central1/keyRings/r/cryptoKeys/c",
}


def test_values_that_the_steps_accept_raise_no_problem():
    assert value_problems(GOOD, region="us-central1") == []
    # 0.7 + 0.2 + 0.1 is 0.9999999999999999 in floats: within 1e-9 of 1
    assert value_problems({**GOOD, "registry_uri": "local:///gcs/bucket/registry"}) == []


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"source_uri": "duckdb:///data.db?table=t"}, "parameter 'source_uri': "
         "'duckdb:///data.db?table=t' is not a BigQuery table: use bq://PROJECT.DATASET.TABLE"),
        ({"source_uri": "bq://sales.orders"}, "parameter 'source_uri': BigQuery URI "),
        ({"feature_config": '{"lable": "y"}'}, "parameter 'feature_config': unknown feature "
         "config keys ['lable']"),
        ({"feature_config": '{"label": "y.z"}'}, "parameter 'feature_config': invalid column name"),
        ({"test_ratio": 0.2}, "parameters train_ratio, validation_ratio, test_ratio: "
         "(0.7, 0.2, 0.2) sums to 1.1, not 1"),
        ({"test_ratio": 0.1 + 2e-9}, "parameters train_ratio, validation_ratio, test_ratio: "
         "(0.7, 0.2, 0.100000002) sums to "),
        ({"test_ratio": 0.0, "train_ratio": 0.8}, "parameters train_ratio, validation_ratio, "
         "test_ratio: 0.0 must be greater than 0"),
        ({"imbalance_max_ratio": 0.5}, "parameter 'imbalance_*': max_ratio must be >= 1"),
        ({"tolerance": -0.1}, "parameter 'tolerance': -0.1 must be >= 0"),
        ({"model_display_name": "x" * 129}, "parameter 'model_display_name': model display"),
        ({"model_labels": '{"a": "B"}'}, "parameter 'model_labels': model_labels a='B'"),
        ({"model_labels": "[1]"}, "parameter 'model_labels': must be a JSON object"),
        ({"registry_uri": "vertex://p/us"}, "parameter 'registry_uri': 'vertex://p/us' is not"),
        ({"output_dataset": "bad-dataset"}, "parameter 'output_dataset': invalid dataset"),
        ({"hyperparameters": '{"epoch": 3}'}, "parameter 'hyperparameters': unknown "),
        ({"kms_key": "projects/k/locations/eu/keyRings/r/cryptoKeys/c"},
         "parameter 'kms_key': the key is in location 'eu' but the job runs in 'us-central1'"),
    ],
)  # fmt: skip
def test_each_bad_value_is_one_line_naming_the_parameter(changes, problem):
    problems = value_problems({**GOOD, **changes}, region="us-central1")
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_effective_values_take_defaults_for_what_was_not_given():
    assert effective_values(DECLARED, {"epochs": 9}) == {
        "min_metric": 0.5,
        "epochs": 9,
        "strict": False,
        "extra": {},
    }


def test_kms_key_form_and_region():
    key = "projects/p/locations/us-central1/keyRings/r/cryptoKeys/k"
    assert kms_key_problem("--kms-key", key, "us-central1") is None
    assert kms_key_problem("--kms-key", "", "us-central1") is None
    assert kms_key_problem("--kms-key", key + "/cryptoKeyVersions/1") == (
        f"--kms-key: {key + '/cryptoKeyVersions/1'!r} is not a Cloud KMS key: use "
        "projects/P/locations/L/keyRings/R/cryptoKeys/K"
    )


def test_template_parameters_reads_the_root_inputs():
    template = {"root": {"inputDefinitions": {"parameters": DECLARED}}}
    assert template_parameters(template) == DECLARED
    assert template_parameters({"root": {}}) == {}


def test_parse_pairs_keeps_equals_in_values_and_last_wins():
    items = ["a=1", " b =x=y", "a=2", "empty="]
    assert parse_pairs(items, "--param") == {"a": "2", "b": "x=y", "empty": ""}
    for bad in ("novalue", "=x", " =x"):
        with pytest.raises(PipelineInputError, match=rf"--param '{bad}' must look like NAME=VALUE"):
            parse_pairs([bad], "--param")
    assert split_commas(["a=1,b=2", "c=3", ",,"]) == ["a=1", "b=2", "c=3"]


def test_read_run_config_splits_flags_parameters_and_labels(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "project: p\nregion: europe-west4\nparameters:\n  epochs: 4\n  extra: {a: 1}\n"
        "labels: {owner: data-team, version: 2}\n"
    )
    config = read_run_config(path, ["project", "region", "image"])
    assert config == RunConfig(
        flags={"project": "p", "region": "europe-west4"},
        parameters={"epochs": 4, "extra": {"a": 1}},
        labels={"owner": "data-team", "version": "2"},
    )
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_run_config(empty, ["project"]) == RunConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n", "must hold a YAML mapping"),
        ("projekt: p\n", "unknown key(s) ['projekt']"),
        ("parameters: [a]\n", "'parameters' in"),
        ("labels: x\n", "'labels' in"),
        ("a: [1\n", "is not valid YAML"),
    ],
)
def test_read_run_config_errors(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(PipelineInputError) as caught:
        read_run_config(path, ["project"])
    assert message in str(caught.value)
    with pytest.raises(PipelineInputError, match="cannot read --config"):
        read_run_config(tmp_path / "missing.yaml", ["project"])


def test_merge_flags_the_command_line_wins_over_the_config():
    given = {"project": None, "region": "us-east1", "image": "default-image", "wait": True}
    config = {"project": "p", "region": "europe-west4", "image": "my-image"}
    merged = merge_flags(given, config, {"image": "default-image"})
    assert merged == {"project": "p", "region": "us-east1", "image": "my-image", "wait": True}
    explicit = merge_flags({**given, "image": "cli-image"}, config, {"image": "default-image"})
    assert explicit["image"] == "cli-image"
    assert given == {"project": None, "region": "us-east1", "image": "default-image", "wait": True}
