"""evaluate_model on a tiny exported model and in-memory Arrow tables; sklearn as the oracle.

Covers the operating point (the model's decision rule), the argmax figures beside it, the check
that the signature applies the rule, and the baselines (prior, logistic regression).
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pyarrow as pa
import pytest
from conftest_models import build_tiny_model, make_table
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from vertex_imbalanced.artifacts import (
    KERAS_FILE,
    METRICS_FILE,
    MODEL_COMPLETE_FILE,
    REPORT_FILE,
    SAVED_MODEL_DIR,
    model_metadata_path,
)
from vertex_imbalanced.config import WEIGHT_COLUMN, FeatureSpec
from vertex_imbalanced.errors import EvaluationError, LabelError, PipelineInputError
from vertex_imbalanced.evaluation.decision_rule import DecisionRule, apply, choose_decision_rule
from vertex_imbalanced.evaluation.evaluate import (
    DECISION_RULE_KEY,
    evaluate_model,
    load_model,
    scalar_metrics,
)
from vertex_imbalanced.evaluation.vertex_schema import (
    CLASSIFICATION_SCHEMA_URI,
    check_vertex_evaluation,
)
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource

BINARY = ["neg", "pos"]
THREE = ["a", "b", "c"]


def _spec(classes):
    return FeatureSpec(
        label="label", numeric=("x",), categorical=("color",), key="id", classes=tuple(classes)
    )


@pytest.fixture(scope="module")
def binary_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("m") / "binary", BINARY)


@pytest.fixture(scope="module")
def three_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("m") / "three", THREE)


def _predict(model_dir, table):
    """Oracle predictions: the model's own signature on the whole table at once."""
    import tensorflow as tf

    serve = load_model(model_dir).serve
    out = serve(
        x=tf.constant(table["x"].to_numpy(), tf.float32),
        color=tf.constant(table["color"].to_pylist()),
    )
    return out["probabilities"].numpy()


def _weighted(table, weights):
    return table.append_column(WEIGHT_COLUMN, pa.array(weights, pa.float64()))


def _ids(table, classes):
    return np.array([classes.index(v) for v in table["label"].to_pylist()])


def _with_rule(model_dir, rule, dest, rows=None):
    """A copy of ``model_dir`` whose metadata carries ``rule`` and whose signature applies it.

    This is the contract of the train step (docs: /tmp/work/requests/TRAINING.md item 3):
    ``class_id = argmax(probabilities @ A)``.
    """
    import keras
    import tensorflow as tf

    shutil.copytree(model_dir, dest)
    shutil.rmtree(dest / SAVED_MODEL_DIR)
    model = keras.saving.load_model(dest / KERAS_FILE)
    matrix = tf.constant(rule.as_array(), tf.float32)

    def serve(features):
        probabilities = tf.cast(model(features, training=False), tf.float32)
        return {
            "probabilities": probabilities,
            "class_id": tf.argmax(tf.matmul(probabilities, matrix), axis=-1),
        }

    signature = {
        "x": tf.TensorSpec([None], tf.float32, name="x"),
        "color": tf.TensorSpec([None], tf.string, name="color"),
    }
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve, input_signature=[signature])
    archive.write_out(str(dest / SAVED_MODEL_DIR), verbose=False)
    meta = json.loads(model_metadata_path(dest).read_text())
    meta[DECISION_RULE_KEY] = rule.to_dict()
    if rows is not None:
        meta["training_data"] = {"rows": rows}
    model_metadata_path(dest).write_text(json.dumps(meta))
    return dest


def test_binary_metrics_and_files_match_sklearn_without_a_rule(binary_model, tmp_path):
    test = make_table(BINARY, [900, 100], seed=1)
    val = make_table(BINARY, [450, 50], seed=2)
    res = evaluate_model(
        binary_model,
        ArrowTableSource(test, batch_rows=128, name="test_tbl"),
        ArrowTableSource(val, batch_rows=128, name="val_tbl"),
        _spec(BINARY),
        BINARY,
        tmp_path / "out",
        batch_size=300,
        baselines=False,
    )
    m = res.metrics
    y = _ids(test, BINARY)
    p = _predict(binary_model, test)
    pred = p.argmax(1)
    np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-6)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p[:, 1]), abs=1e-6)
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p[:, 1]), abs=1e-6)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p), abs=1e-6)
    # No rule in the model: the operating point is argmax, chosen on nothing.
    assert m["operating_point"]["kind"] == "argmax"
    assert m["operating_point"]["chosen_on"] == "none"
    assert m["argmax"]["macro_f1"] == m["macro_f1"]
    assert "baselines" not in m
    # Files: metrics.json round-trips, Vertex file is well-formed, report is there.
    on_disk = json.loads(res.metrics_path.read_text())
    assert on_disk["macro_f1"] == m["macro_f1"] and on_disk["classes"] == BINARY
    assert res.report_path.read_text().startswith("<!DOCTYPE html>")
    vertex = json.loads(res.vertex_evaluation_path.read_text())
    check_vertex_evaluation(vertex)
    assert vertex["metrics"]["auRoc"] == pytest.approx(m["roc_auc"])
    scalars = scalar_metrics(m)
    assert scalars["test_macro_f1"] == m["macro_f1"]
    assert scalars["test_class_pos_recall"] == m["per_class"]["pos"]["recall"]
    assert scalars["test_argmax_macro_f1"] == m["argmax"]["macro_f1"]


@pytest.mark.parametrize("classes", [BINARY, THREE], ids=["threshold", "class-weights"])
def test_headline_metrics_are_at_the_models_rule_and_argmax_stays_beside(
    classes, binary_model, three_model, tmp_path
):
    base = binary_model if classes == BINARY else three_model
    counts = [900, 100] if classes == BINARY else [600, 300, 100]
    test = make_table(classes, counts, seed=11)
    val = make_table(classes, [n // 2 for n in counts], seed=12)
    val_ids = _ids(val, classes)
    rule = choose_decision_rule(_predict(base, val), val_ids)
    if rule.kind == "argmax":  # make sure the rule moves the decision
        weights = (0.7, 0.3) if classes == BINARY else (1.0, 1.3, 2.2)
        rule = (
            DecisionRule("threshold", ((0.3, 0.0), (0.0, 0.7)), threshold=0.3)
            if classes == BINARY
            else DecisionRule("class_weights", tuple(map(tuple, np.diag(weights))), weights=weights)
        )
    model_dir = _with_rule(base, rule, tmp_path / "ruled")
    res = evaluate_model(
        model_dir,
        ArrowTableSource(test, name="test_tbl"),
        ArrowTableSource(val, name="val_tbl"),
        _spec(classes),
        classes,
        tmp_path / "out",
        baselines=False,
    )
    m = res.metrics
    y, p = _ids(test, classes), _predict(model_dir, test)
    decided = apply(rule, p)
    assert (decided != p.argmax(1)).any()
    labels = list(range(len(classes)))
    prec, rec, f1, support = skm.precision_recall_fscore_support(
        y, decided, labels=labels, zero_division=0
    )
    for i, name in enumerate(classes):
        row = m["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (prec[i], rec[i], f1[i], support[i]), abs=1e-6
        )
    assert m["macro_f1"] == pytest.approx(np.mean(f1), abs=1e-6)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, decided), abs=1e-6)
    np.testing.assert_array_equal(
        m["confusion_matrix"], skm.confusion_matrix(y, decided, labels=labels)
    )
    assert m["argmax"]["macro_f1"] == pytest.approx(
        skm.f1_score(y, p.argmax(1), average="macro", labels=labels, zero_division=0), abs=1e-6
    )
    assert m["operating_point"] == json.loads(json.dumps(rule.summary()))
    # The Vertex evaluation carries the operating point's confusion matrix.
    vertex = json.loads(res.vertex_evaluation_path.read_text())
    assert vertex["metrics"]["confusionMatrix"]["rows"] == m["confusion_matrix"]
    if classes == BINARY:
        assert scalar_metrics(m)["test_operating_threshold"] == rule.threshold


def test_a_signature_that_does_not_apply_the_rule_is_refused(binary_model, tmp_path):
    model_dir = tmp_path / "lying"
    shutil.copytree(binary_model, model_dir)  # its signature decides by argmax
    meta = json.loads(model_metadata_path(model_dir).read_text())
    rule = DecisionRule("threshold", ((0.2, 0.0), (0.0, 0.8)), threshold=0.2)
    meta[DECISION_RULE_KEY] = rule.to_dict()
    model_metadata_path(model_dir).write_text(json.dumps(meta))
    out = tmp_path / "out"
    with pytest.raises(EvaluationError, match="must apply the rule the model carries"):
        evaluate_model(
            model_dir,
            ArrowTableSource(make_table(BINARY, [300, 100], seed=13), name="t"),
            None,
            _spec(BINARY),
            BINARY,
            out,
            baselines=False,
        )
    assert not (out / METRICS_FILE).exists()
    meta[DECISION_RULE_KEY] = {"kind": "argmax", "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}
    model_metadata_path(model_dir).write_text(json.dumps(meta))
    with pytest.raises(PipelineInputError, match="rule for 3 classes but the model has 2"):
        load_model(model_dir)


def _features(model_dir, table):
    """Oracle features: the tiny model's head input, built by hand (x, then one-hot color)."""
    vocabulary = ["[UNK]", "red", "blue", "green"]
    onehot = np.eye(4)[[vocabulary.index(c) for c in table["color"].to_pylist()]]
    return np.c_[table["x"].to_numpy(), onehot]


def test_baselines_prior_and_logistic_regression_match_sklearn(three_model, tmp_path):
    classes = THREE
    train = make_table(classes, [500, 300, 60], sigma=0.5, seed=21)
    weights = np.where(_ids(train, classes) == 0, 2.0, 1.0)  # downsampled class 0, upweighted
    test = make_table(classes, [600, 250, 50], sigma=0.5, seed=22)
    val = make_table(classes, [300, 120, 30], sigma=0.5, seed=23)
    res = evaluate_model(
        three_model,
        ArrowTableSource(test, name="test_tbl"),
        ArrowTableSource(val, name="val_tbl"),
        _spec(classes),
        classes,
        tmp_path / "out",
        batch_size=128,
        train_source=ArrowTableSource(_weighted(train, weights), name="train_tbl"),
    )
    b = res.metrics["baselines"]
    y = _ids(test, classes)
    # Prior: the weighted training prior as probabilities, the majority class as the decision.
    y_train = _ids(train, classes)
    prior = np.bincount(y_train, weights=weights, minlength=3) / weights.sum()
    np.testing.assert_allclose(b["prior"]["prior"], prior)
    constant = np.full(y.size, prior.argmax())
    assert b["prior"]["macro_f1"] == pytest.approx(
        skm.f1_score(y, constant, average="macro", labels=[0, 1, 2], zero_division=0)
    )
    assert b["prior"]["log_loss"] == pytest.approx(
        skm.log_loss(y, np.tile(prior, (y.size, 1)), labels=[0, 1, 2]), abs=1e-6
    )
    # Logistic regression: sklearn on the same features and weights (the model has no rule,
    # so the baseline decides by argmax too).
    oracle = LogisticRegression(C=1.0, max_iter=300).fit(
        _features(three_model, train), y_train, sample_weight=weights / weights.mean()
    )
    probs = oracle.predict_proba(_features(three_model, test))
    lr = b["logistic_regression"]
    assert lr["operating_point"]["kind"] == "argmax"
    assert lr["macro_f1"] == pytest.approx(
        skm.f1_score(y, probs.argmax(1), average="macro"), abs=1e-6
    )
    assert lr["log_loss"] == pytest.approx(skm.log_loss(y, probs), abs=1e-4)
    assert (lr["sampled_rows"], lr["train_rows"], lr["features"]) == (860, 860, 5)
    assert lr["macro_f1"] > b["prior"]["macro_f1"] + 0.4  # separable table: far above the prior
    scalars = scalar_metrics(res.metrics)
    assert scalars["test_baseline_logistic_regression_macro_f1"] == lr["macro_f1"]
    page = res.report_path.read_text()
    assert "Baselines" in page and "logistic regression" in page


def test_logistic_baseline_takes_the_same_kind_of_rule_and_a_bounded_sample(binary_model, tmp_path):
    train = make_table(BINARY, [1800, 200], sigma=0.9, seed=31)
    val = make_table(BINARY, [900, 100], sigma=0.9, seed=32)
    test = make_table(BINARY, [900, 100], sigma=0.9, seed=33)
    rule = DecisionRule(
        "threshold", ((0.3, 0.0), (0.0, 0.7)), threshold=0.3, chosen_on="validation"
    )
    model_dir = _with_rule(binary_model, rule, tmp_path / "ruled", rows=2000)
    res = evaluate_model(
        model_dir,
        ArrowTableSource(test, name="test_tbl"),
        ArrowTableSource(val, name="val_tbl"),
        _spec(BINARY),
        BINARY,
        tmp_path / "out",
        train_source=ArrowTableSource(_weighted(train, np.ones(2000)), name="train_tbl"),
        baseline_max_rows=500,
    )
    lr = res.metrics["baselines"]["logistic_regression"]
    assert lr["train_rows"] == 2000 and lr["sample_rate"] == 0.25
    assert 400 <= lr["sampled_rows"] <= 500  # a uniform Bernoulli sample, capped at the bound
    op = lr["operating_point"]
    # the rule is chosen on a uniform sample of the validation split, bounded like the fit's
    assert op["chosen_on"] == "validation" and op["validation_rows"] == 500
    assert lr["validation_rows_read"] == 1000
    assert op["kind"] in ("threshold", "argmax") and op["validation_argmax_metric"] is not None
    assert set(lr) >= {"macro_f1", "macro_precision", "macro_recall", "accuracy", "log_loss"}
    assert lr["roc_auc"] > 0.8


def test_vertex_file_is_read_by_gcpc_importer_and_parses_as_model_evaluation(three_model, tmp_path):
    from google.cloud.aiplatform_v1.types import ModelEvaluation
    from google_cloud_pipeline_components.container._implementation.model_evaluation import (
        import_model_evaluation as importer,
    )

    res = evaluate_model(
        three_model,
        ArrowTableSource(make_table(THREE, [300, 120, 40], seed=3)),
        None,
        _spec(THREE),
        THREE,
        tmp_path,
    )
    overall, slices = importer.read_metrics_from_file(
        str(res.vertex_evaluation_path), "classification"
    )
    assert [importer.to_slice(s["singleOutputSlicingSpec"])["value"] for s in slices] == THREE
    doc = json.loads(res.vertex_evaluation_path.read_text())
    ev = ModelEvaluation.from_json(
        json.dumps({"metricsSchemaUri": doc["metricsSchemaUri"], "metrics": doc["metrics"]})
    )
    assert ev.metrics_schema_uri == CLASSIFICATION_SCHEMA_URI
    rows = [list(r) for r in ev.metrics["confusionMatrix"]["rows"]]
    assert rows == res.metrics["confusion_matrix"]
    assert [s["displayName"] for s in ev.metrics["confusionMatrix"]["annotationSpecs"]] == THREE
    assert len(ev.metrics["confidenceMetrics"]) == 25
    assert overall["metrics"].struct_value["logLoss"] == pytest.approx(res.metrics["log_loss"])


def test_class_absent_from_test_split_is_reported(three_model, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = evaluate_model(
            three_model,
            ArrowTableSource(make_table(THREE, [200, 80, 0], seed=4)),
            None,
            _spec(THREE),
            THREE,
            tmp_path,
        )
    assert res.metrics["per_class"]["c"]["support"] == 0
    assert any("'c' is absent" in n for n in res.metrics["notes"])
    assert any("'c' is absent" in str(w.message) for w in caught)
    assert "is absent" in res.report_path.read_text()


def test_nan_predictions_name_the_batch_and_write_nothing(binary_model, tmp_path):
    table = make_table(BINARY, [300, 100], seed=5)
    x = table["x"].to_numpy().copy()
    x[600 - 300] = np.nan  # row 300 -> batch 1 of 256-row batches
    table = table.set_column(1, "x", pa.array(x))
    out = tmp_path / "out"
    out.mkdir()
    (out / METRICS_FILE).write_text("{}")  # a stale file from an earlier run
    with pytest.raises(EvaluationError, match=r"batch 1 \(rows 256-399\) of test split nan_tbl"):
        evaluate_model(
            binary_model,
            ArrowTableSource(table, name="nan_tbl"),
            None,
            _spec(BINARY),
            BINARY,
            out,
            batch_size=256,
        )
    assert not (out / METRICS_FILE).exists()
    assert not (out / REPORT_FILE).exists()


def test_model_classes_differ_from_prepared_classes(binary_model, tmp_path):
    with pytest.raises(
        LabelError, match=r"trained for classes \['neg', 'pos'\].*\['a', 'b', 'c'\]"
    ):
        evaluate_model(
            binary_model,
            ArrowTableSource(make_table(THREE, [5, 5, 5])),
            None,
            _spec(THREE),
            THREE,
            tmp_path,
        )


def test_test_label_outside_model_classes(binary_model, tmp_path):
    table = make_table(["neg", "maybe"], [20, 3], seed=6)
    with pytest.raises(LabelError, match="maybe"):
        evaluate_model(binary_model, ArrowTableSource(table), None, _spec(BINARY), BINARY, tmp_path)


def test_empty_test_split(binary_model, tmp_path):
    empty = make_table(BINARY, [0, 0])
    with pytest.raises(PipelineInputError, match="test split empty_tbl is empty"):
        evaluate_model(
            binary_model,
            ArrowTableSource(empty, name="empty_tbl"),
            None,
            _spec(BINARY),
            BINARY,
            tmp_path,
        )


def test_missing_and_corrupt_model(tmp_path, binary_model):
    source = ArrowTableSource(make_table(BINARY, [5, 5]))
    with pytest.raises(PipelineInputError, match="has no saved_model/saved_model.pb"):
        evaluate_model(tmp_path / "nope", source, None, _spec(BINARY), BINARY, tmp_path / "o")
    corrupt = tmp_path / "corrupt"
    (corrupt / "saved_model").mkdir(parents=True)
    (corrupt / "saved_model" / "saved_model.pb").write_bytes(b"not a protobuf")
    (corrupt / "model_metadata.json").write_text(json.dumps({"classes": BINARY}))
    with pytest.raises(PipelineInputError, match="cannot load the SavedModel"):
        evaluate_model(corrupt, source, None, _spec(BINARY), BINARY, tmp_path / "o")
    no_meta = tmp_path / "no_meta"
    (no_meta / "saved_model").mkdir(parents=True)
    (no_meta / "saved_model" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(PipelineInputError, match="cannot read 'classes' from model_metadata.json"):
        evaluate_model(no_meta, source, None, _spec(BINARY), BINARY, tmp_path / "o")
    unfinished = tmp_path / "unfinished"  # a killed train step: every file but its marker
    shutil.copytree(binary_model, unfinished)
    (unfinished / MODEL_COMPLETE_FILE).unlink()
    with pytest.raises(PipelineInputError, match="is incomplete: it has no _COMPLETE marker"):
        evaluate_model(unfinished, source, None, _spec(BINARY), BINARY, tmp_path / "o")
    assert not (tmp_path / "o" / METRICS_FILE).exists()


def test_columns_renamed_for_the_signature_are_fed_by_serving_inputs(tmp_path):
    from vertex_imbalanced.training.serving_names import serving_names

    model_dir = build_tiny_model(tmp_path / "m", BINARY, numeric=("from",))  # a Python keyword
    spec = FeatureSpec(
        label="label", numeric=("from",), categorical=("color",), key="id", classes=tuple(BINARY)
    )
    names = serving_names(spec.features)
    assert names["from"] != "from"  # the signature argument is renamed
    table = make_table(BINARY, [300, 100], seed=41).rename_columns(["id", "from", "color", "label"])
    meta_path = model_metadata_path(model_dir)
    meta = json.loads(meta_path.read_text())
    with pytest.raises(PipelineInputError, match=r"needs inputs \[.from_[0-9a-f]{8}.\]"):
        evaluate_model(model_dir, ArrowTableSource(table), None, spec, BINARY, tmp_path / "o")
    meta["serving_inputs"] = names
    meta_path.write_text(json.dumps(meta))
    train = _weighted(make_table(BINARY, [300, 100], seed=42), np.ones(400))
    res = evaluate_model(
        model_dir,
        ArrowTableSource(table),
        None,
        spec,
        BINARY,
        tmp_path / "out",
        train_source=ArrowTableSource(
            train.rename_columns(["id", "from", "color", "label", WEIGHT_COLUMN])
        ),
    )
    y = _ids(table, BINARY)
    x = table["from"].to_numpy()
    # The tiny model's logits are 3 * (k * x - k**2 / 2): class 1 iff x > 0.5.
    pred = (x > 0.5).astype(int)
    assert res.metrics["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert res.metrics["baselines"]["logistic_regression"]["macro_f1"] > 0.7
