import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import tensorflow as tf

from vertex_imbalanced.config import WEIGHT_COLUMN, FeatureSpec, Hyperparameters
from vertex_imbalanced.errors import LabelError, PipelineInputError, SchemaError
from vertex_imbalanced.reading.sources.arrow_memory import ArrowTableSource
from vertex_imbalanced.training.trainer import train_model
from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC, demo_table

CLASSES = ("0", "1", "2")
SPEC = DEMO_SPEC.with_weight(WEIGHT_COLUMN)
TINY = Hyperparameters(hidden_units=(8,), epochs=3, batch_size=128, early_stopping_patience=5)


def weighted(table: pa.Table, weights=None) -> pa.Table:
    w = np.ones(table.num_rows) if weights is None else weights
    return table.append_column(WEIGHT_COLUMN, pa.array(w, pa.float64()))


def sources(train_rows=1200, val_rows=400):
    return (
        ArrowTableSource(weighted(demo_table(train_rows, seed=1)), batch_rows=256, name="train"),
        ArrowTableSource(demo_table(val_rows, seed=2), name="validation"),
    )


def no_output(out: Path) -> bool:
    return not out.exists() and not out.with_name(f"{out.name}.partial").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "model"
    backup = out.parent / "backup"
    train, val = sources()
    result = train_model(
        train,
        val,
        SPEC,
        CLASSES,
        TINY,
        out,
        backup_dir=str(backup),
        imbalance_report={"mode": "none"},
    )
    return result


def test_model_directory_follows_the_contract(trained):
    out = trained.model_dir
    assert sorted(p.name for p in out.iterdir()) == [
        "_COMPLETE",  # written last: the model is whole
        "logs",
        "model.keras",
        "model_metadata.json",
        "saved_model",
    ]
    meta = json.loads((out / "model_metadata.json").read_text())
    assert meta["framework"] == "tensorflow" and meta["classes"] == list(CLASSES)
    assert meta["feature_spec"]["numeric"] == list(DEMO_SPEC.numeric)
    assert (
        meta["feature_spec"]["weight"] is None and meta["training_weight_column"] == WEIGHT_COLUMN
    )
    assert meta["imbalance"] == {"mode": "none"}
    assert meta["hyperparameters"]["hidden_units"] == [8]
    assert meta["training_metrics"]["epochs_run"] == 3
    assert meta["training_metrics"]["train_rows_per_epoch"] == 1200
    assert meta["training_metrics"]["val_loss"] == pytest.approx(min(trained.history["val_loss"]))
    assert not out.with_name("model.partial").exists()
    assert not (out.parent / "backup").exists()  # the checkpoint is removed after success
    events = list((out / "logs").rglob("events.out.tfevents.*"))
    assert {p.parent.name for p in events} == {"train", "validation"}


RAW_ROWS = {
    "x1": [0.1, np.nan, 2.5, -1.0, np.nan],
    "x2": [np.nan, -2.0, 0.0, 1.0, np.nan],
    "x3": [0.0, 0.5, np.nan, 3.5, np.nan],
    "n_items": [2.0, 4.0, 1.0, np.nan, np.nan],
    "is_member": [0.0, 1.0, np.nan, 1.0, np.nan],
    "color": ["blue", "", "purple", "red", ""],  # "" = NULL, "purple" never seen
    "region": ["north", "mars", "", "west", ""],
}


def test_exported_models_predict_like_the_in_memory_model(trained):
    numeric = {k: tf.constant(v, tf.float32) for k, v in RAW_ROWS.items() if k in DEMO_SPEC.numeric}
    strings = {k: tf.constant(v) for k, v in RAW_ROWS.items() if k in DEMO_SPEC.categorical}
    features = numeric | strings
    expected = trained.model(features).numpy()
    assert np.isfinite(expected).all()
    reloaded = keras.models.load_model(trained.model_dir / "model.keras")
    np.testing.assert_allclose(reloaded(features).numpy(), expected, rtol=1e-6, atol=1e-7)
    serving = tf.saved_model.load(str(trained.model_dir / "saved_model"))
    out = serving.signatures["serving_default"](**features)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out["class_id"].numpy(), expected.argmax(axis=1))
    assert out["class_id"].dtype == tf.int64


def test_same_seed_same_metrics_different_seed_different_metrics(tmp_path, trained):
    train, val = sources()
    again = train_model(train, val, SPEC, CLASSES, TINY, tmp_path / "again")
    assert again.metrics == trained.metrics
    assert again.history == trained.history
    other = train_model(
        train,
        val,
        SPEC,
        CLASSES,
        Hyperparameters(**{**TINY.to_dict(), "seed": 7}),
        tmp_path / "other",
    )
    assert other.metrics["val_loss"] != trained.metrics["val_loss"]


def _replace(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def _train_table():
    return weighted(demo_table(600, seed=3))


BAD_INPUTS = {
    "one declared class": (
        lambda: (_train_table(), SPEC, ("0",)),
        LabelError,
        r"at least two classes",
    ),
    "one class in the data": (
        lambda: (_train_table().filter(pc.equal(pc.field("label"), 0)), SPEC, CLASSES),
        LabelError,
        r"holds only class \['0'\]",
    ),
    "labels outside the declared classes": (
        lambda: (_train_table(), SPEC, ("0", "1")),
        LabelError,
        r"'label' of train.*value 2",
    ),
    "missing feature column": (
        lambda: (
            _train_table(),
            FeatureSpec(**{**SPEC.to_dict(), "numeric": ["x1", "x_1"]}),
            CLASSES,
        ),
        SchemaError,
        r"x_1",
    ),
    "all-NULL feature": (
        lambda: (_replace(_train_table(), "x3", pa.nulls(600, pa.float64())), SPEC, CLASSES),
        PipelineInputError,
        r"'x3' of train is NULL in all 600 rows",
    ),
    "zero rows after downsampling": (
        lambda: (_train_table().slice(0, 0), SPEC, CLASSES),
        PipelineInputError,
        r"zero rows",
    ),
    "non-numeric values in a numeric column": (
        lambda: (
            _train_table(),
            FeatureSpec(
                **{**SPEC.to_dict(), "numeric": ["x1", "region"], "categorical": ["color"]}
            ),
            CLASSES,
        ),
        SchemaError,
        r"'region' of train is STRING but is listed as numeric",
    ),
    "float label": (
        lambda: (
            _replace(
                _train_table(), "label", pc.cast(_train_table().column("label"), pa.float64())
            ),
            SPEC,
            CLASSES,
        ),
        LabelError,
        r"label column 'label' of train is FLOAT64",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_clearly_and_writes_nothing(tmp_path, case):
    make, error, pattern = BAD_INPUTS[case]
    table, spec, classes = make()
    out = tmp_path / "model"
    train = ArrowTableSource(table, name="train")
    val = ArrowTableSource(demo_table(300, seed=4), name="validation")
    with pytest.raises(error, match=pattern):
        train_model(train, val, spec, classes, TINY, out, backup_dir=str(tmp_path / "b"))
    assert no_output(out) and not (tmp_path / "b").exists()


def test_class_absent_from_validation_warns_and_trains(tmp_path):
    train, _ = sources(600)
    val_table = demo_table(400, seed=2)
    val = ArrowTableSource(val_table.filter(pc.not_equal(pc.field("label"), 2)), name="val")
    hp = Hyperparameters(**{**TINY.to_dict(), "epochs": 1})
    with pytest.warns(UserWarning, match=r"classes \['2'\] are in the training data but absent"):
        result = train_model(train, val, SPEC, CLASSES, hp, tmp_path / "model")
    assert (result.model_dir / "saved_model").is_dir()


# -- fault tolerance: SIGTERM during a checkpoint save, restart from the checkpoint ---------

FAULT_HP = Hyperparameters(
    hidden_units=(8,),
    epochs=5,
    dropout=0.2,
    batch_size=128,
    early_stopping_patience=2,
    learning_rate=0.02,
    seed=3,
)


def fault_run(out: str, backup: str, sigterm_at_save: int | None = None) -> dict:
    """Train on fixed data; with ``sigterm_at_save`` the process gets SIGTERM (default action:
    it dies) in the middle of that epoch's checkpoint, while Keras writes the HDF5 weights."""
    if sigterm_at_save is not None:
        import signal

        from keras.src.saving import saving_lib

        real_close, saves = saving_lib.H5IOStore.close, []

        def close(self):
            if self.mode == "w":
                saves.append(1)
                if len(saves) == sigterm_at_save:
                    self.h5_file.flush()  # part of the file is on disk, then the kill
                    os.kill(os.getpid(), signal.SIGTERM)
            return real_close(self)

        saving_lib.H5IOStore.close = close
    train, val = sources(900, 500)
    result = train_model(train, val, SPEC, CLASSES, FAULT_HP, out, backup_dir=backup)
    return {"metrics": result.metrics, "history": result.history}


SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {tests!r})
    from test_trainer import fault_run
    kill = os.environ.get("SIGTERM_AT_SAVE")
    result = fault_run(sys.argv[1], sys.argv[2], int(kill) if kill else None)
    print("RESULT", json.dumps(result))
    """
)


@pytest.mark.slow
@pytest.mark.timeout(2000)
def test_sigterm_while_the_checkpoint_is_written_resumes_to_the_uninterrupted_result(tmp_path):
    """Preemption during the epoch-2 save: Keras' BackupAndRestore left a truncated
    ``latest.weights.h5`` there and every retry failed to open it."""
    reference = fault_run(str(tmp_path / "ref"), str(tmp_path / "ref_backup"))
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    out, backup = str(tmp_path / "model"), str(tmp_path / "backup")
    env = {**os.environ, "SIGTERM_AT_SAVE": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}
    killed = subprocess.run(
        [sys.executable, str(script), out, backup],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a loaded 2-core machine; ~30 s when quiet
    )
    assert killed.returncode == -15, killed.stderr[-2000:]  # died of SIGTERM
    manifest = json.loads(Path(backup, "manifest.json").read_text())
    assert manifest["epochs_done"] == 1  # epoch 2's save did not complete
    assert not Path(out, "_COMPLETE").exists()
    env.pop("SIGTERM_AT_SAVE")
    resumed = subprocess.run(
        [sys.executable, str(script), out, backup],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a loaded 2-core machine; ~30 s when quiet
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout.split("RESULT ", 1)[1])
    assert len(result["history"]["loss"]) == reference["metrics"]["epochs_run"]
    assert result["metrics"] == reference["metrics"]
    assert result["history"] == reference["history"]
    assert Path(out, "saved_model").is_dir() and Path(out, "_COMPLETE").is_file()
    assert not Path(backup).exists()


# -- proof it works: downsample + upweight on a ~90/9/1 % problem, judged on the test split ---

# batch size, epochs, patience: the automatic budget (8k downsampled vs 40k rows: different
# batches and epochs, the same number of optimizer steps aimed at)
PROOF_HP = Hyperparameters(hidden_units=(32, 16), dropout=0.0)


def _train_and_predict(uri: str, mode: str, out: Path) -> dict:
    """prepare_data (DuckDB SQL: split, downsample, weights) -> train_model -> test predictions."""
    from vertex_imbalanced.config import ImbalanceConfig
    from vertex_imbalanced.reading.datasets import make_dataset
    from vertex_imbalanced.reading.sources.open import open_source
    from vertex_imbalanced.warehouse.prepare import prepare_data

    prepared = prepare_data(
        uri,
        DEMO_SPEC,
        output_prefix=mode,
        split_ratios=(0.5, 0.1, 0.4),
        imbalance=ImbalanceConfig(mode=mode),
    )
    spec = prepared.spec
    train_spec = spec.with_weight(WEIGHT_COLUMN)
    result = train_model(
        open_source(prepared.train_uri, train_spec.read_columns),
        open_source(prepared.validation_uri, spec.read_columns),
        train_spec,
        prepared.classes,
        PROOF_HP,
        out / mode,
        imbalance_report=prepared.imbalance,
    )
    test = open_source(prepared.test_uri, spec.read_columns)
    probs, labels = [], []
    for features, label, _ in make_dataset(test, spec, classes=prepared.classes):
        probs.append(result.model(features).numpy())
        labels.append(label.numpy())
    return {
        "rows": result.stats.rows,
        "probs": np.concatenate(probs),
        "labels": np.concatenate(labels),
    }


PRIOR_TOLERANCE = 0.25  # each class's mean predicted probability within +-25 % of its share


def keeps_the_prior(mean_prob: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Per class: is the mean predicted probability within PRIOR_TOLERANCE of the class share?"""
    return np.abs(mean_prob - share) <= PRIOR_TOLERANCE * share


def test_downsample_upweight_keeps_the_prior_cheaper_and_as_good_as_no_downsampling(tmp_path):
    from sklearn.metrics import f1_score, log_loss, recall_score

    from vertex_imbalanced.warehouse.demo_data import write_demo_duckdb

    uri = write_demo_duckdb(tmp_path / "demo.db", 80_000, seed=0)
    modes = ("none", "downsample_upweight", "downsample_only", "class_weight")
    runs = {m: _train_and_predict(uri, m, tmp_path) for m in modes}
    labels = runs["none"]["labels"]
    share = np.bincount(labels, minlength=3) / labels.size
    assert share[2] > 0.005 and share[0] > 0.85  # the test split keeps the original imbalance
    summary = {}
    for mode, run in runs.items():
        np.testing.assert_array_equal(run["labels"], labels)
        predicted = run["probs"].argmax(axis=1)
        summary[mode] = {
            "log_loss": log_loss(labels, run["probs"], labels=[0, 1, 2]),
            "macro_f1": f1_score(labels, predicted, average="macro"),
            "recall": recall_score(labels, predicted, average=None, labels=[0, 1, 2]),
            "mean_prob": run["probs"].mean(axis=0),
            "prior_ratio": run["probs"].mean(axis=0) / share,
        }
    print({"share": share, **summary})
    dsu, only, none = summary["downsample_upweight"], summary["downsample_only"], summary["none"]
    # (i) the prior is kept with weights, per class; lost without them and with class weights
    assert keeps_the_prior(dsu["mean_prob"], share).all(), (dsu["mean_prob"], share)
    assert not keeps_the_prior(only["mean_prob"], share).all(), (only["mean_prob"], share)
    control = summary["class_weight"]["mean_prob"]
    assert not keeps_the_prior(control, share).all(), (control, share)  # negative control
    # (ii) same quality from >= 3x fewer rows per epoch
    assert dsu["log_loss"] <= 1.05 * none["log_loss"]
    assert runs["none"]["rows"] >= 3 * runs["downsample_upweight"]["rows"]
    # (iii) every class is found
    assert (dsu["recall"] > 0).all()


# -- the decision rule, the budget record, column names, constant features ------------------


def demo_features(rows: int = 400, seed: int = 5) -> dict[str, tf.Tensor]:
    from vertex_imbalanced.reading.datasets import FeedOptions, make_dataset

    source = ArrowTableSource(demo_table(rows, seed=seed), name="rows")
    options = FeedOptions(batch_size=rows)
    features, _, _ = next(iter(make_dataset(source, DEMO_SPEC, options, classes=CLASSES)))
    return features


def test_served_class_is_the_decision_rule_of_the_metadata(trained):
    from vertex_imbalanced.evaluation.decision_rule import DecisionRule

    meta = json.loads((trained.model_dir / "model_metadata.json").read_text())
    rule = DecisionRule.from_dict(meta["decision_rule"])
    assert rule == trained.decision_rule and rule.chosen_on == "validation"
    assert rule.validation_rows == 400
    assert meta["serving_inputs"] == {c: c for c in DEMO_SPEC.features}
    features = demo_features()
    serving = tf.saved_model.load(str(trained.model_dir / "saved_model"))
    out = serving.signatures["serving_default"](**features)
    probs = out["probabilities"].numpy()
    decided = np.argmax(probs.astype(np.float64) @ rule.as_array(), axis=1)
    np.testing.assert_array_equal(out["class_id"].numpy(), decided)
    assert [c.decode() for c in out["class_name"].numpy()] == [CLASSES[i] for i in decided]
    # model.keras returns the same probabilities; the rule on them gives the served class
    reloaded = keras.models.load_model(trained.model_dir / "model.keras")
    np.testing.assert_array_equal(rule.apply(reloaded(features).numpy()), decided)


def test_signature_applies_a_non_trivial_rule_exactly_like_numpy(trained, tmp_path):
    from vertex_imbalanced.training.export import export_saved_model

    matrix = np.diag([0.2, 1.0, 5.0])  # class weights: rarely 0, often 2
    export_saved_model(
        trained.model, DEMO_SPEC, str(tmp_path / "sm"), CLASSES, decision_matrix=matrix
    )
    out = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"](**demo_features())
    probs = out["probabilities"].numpy()
    decided = np.argmax(probs.astype(np.float64) @ matrix, axis=1)
    assert (decided != probs.argmax(axis=1)).sum() >= 10  # the rule matters on these rows
    np.testing.assert_array_equal(out["class_id"].numpy(), decided)
    assert out["class_name"].numpy().tolist() == [CLASSES[i].encode() for i in decided]


def test_metadata_records_the_budget_the_user_fixed_and_what_the_run_did(trained):
    budget, hp = trained.metadata["training_budget"], trained.metadata["hyperparameters"]
    assert (budget["batch_size"], budget["planned_epochs"], budget["epoch_cap"]) == (128, 3, 3)
    assert budget["batch_size_source"] == budget["epochs_source"] == "user"
    assert budget["steps_per_epoch"] == 10  # 1200 rows / 128
    assert budget["epochs_run"] == trained.metrics["epochs_run"] == len(trained.history["loss"])
    assert budget["best_epoch"] == trained.metrics["best_epoch"]
    assert budget["lr_schedule"] == "reduce_on_plateau" and budget["final_learning_rate"] > 0
    assert (hp["batch_size"], hp["epochs"], hp["early_stopping_patience"]) == (128, 3, 5)


def _renamed(table: pa.Table, names: dict[str, str]) -> pa.Table:
    return table.rename_columns([names.get(c, c) for c in table.column_names])


def test_columns_named_like_keywords_or_with_a_leading_underscore_train_and_serve(tmp_path):
    names = {"x1": "_score", "x2": "from", "color": "class", "region": "Region"}
    spec = FeatureSpec(
        label="label",
        numeric=[names.get(c, c) for c in DEMO_SPEC.numeric],
        categorical=[names.get(c, c) for c in DEMO_SPEC.categorical],
        weight=WEIGHT_COLUMN,
    )
    train = ArrowTableSource(_renamed(weighted(demo_table(600, seed=1)), names), name="train")
    val = ArrowTableSource(_renamed(demo_table(300, seed=2), names), name="validation")
    hp = Hyperparameters(**{**TINY.to_dict(), "epochs": 1})
    result = train_model(train, val, spec, CLASSES, hp, tmp_path / "model")
    served = result.metadata["serving_inputs"]
    assert served["Region"] == "Region" and served["x3"] == "x3"
    assert {served[c] for c in ("_score", "from", "class")}.isdisjoint({"_score", "from", "class"})
    features = {names.get(c, c): v for c, v in demo_features().items()}
    serving = tf.saved_model.load(str(result.model_dir / "saved_model"))
    out = serving.signatures["serving_default"](**{served[c]: v for c, v in features.items()})
    expected = result.model(features).numpy()
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, rtol=1e-6, atol=1e-7)


def test_constant_training_feature_is_left_out_with_a_warning_and_cannot_move_predictions(tmp_path):
    """Issue 11 case 7: 0 in every train row, 1 in some test rows."""

    def with_flag(table: pa.Table, values) -> pa.Table:
        return table.append_column("flag", pa.array(values, pa.float64()))

    spec = FeatureSpec(**{**SPEC.to_dict(), "numeric": [*DEMO_SPEC.numeric, "flag"]})
    train = ArrowTableSource(with_flag(weighted(demo_table(600, seed=1)), np.zeros(600)))
    val = ArrowTableSource(with_flag(demo_table(300, seed=2), np.zeros(300)))
    hp = Hyperparameters(**{**TINY.to_dict(), "epochs": 2, "early_stopping_patience": 5})
    with pytest.warns(UserWarning, match=r"numeric feature\(s\) 'flag' \(= 0\) are constant"):
        result = train_model(train, val, spec, CLASSES, hp, tmp_path / "model")
    assert result.metadata["training_data"]["constant_features"] == ["flag"]
    features = demo_features()
    rows = int(features["x1"].shape[0])
    serve = tf.saved_model.load(str(result.model_dir / "saved_model")).signatures["serving_default"]
    zero = serve(**features, flag=tf.zeros([rows]))
    one = serve(**features, flag=tf.constant(np.arange(rows) % 2, tf.float32))
    np.testing.assert_array_equal(one["probabilities"].numpy(), zero["probabilities"].numpy())
    np.testing.assert_array_equal(one["class_id"].numpy(), zero["class_id"].numpy())


def test_a_run_whose_best_epoch_is_the_last_allowed_says_so(tmp_path):
    train, val = sources(600, 300)
    hp = Hyperparameters(**{**TINY.to_dict(), "epochs": 2, "learning_rate": 1e-4})
    with pytest.warns(UserWarning, match=r"best epoch is the last allowed one \(2 of 2"):
        result = train_model(train, val, SPEC, CLASSES, hp, tmp_path / "model")
    budget = result.metadata["training_budget"]
    assert budget["best_epoch_is_last"] and budget["stop_reason"] == "epoch_cap"
    assert "more epochs" in budget["warning"]


def test_iris_with_default_hyperparameters_gets_a_fitted_budget_and_learns(tmp_path):
    """Issue 12: iris scored macro F1 0.73 with batch 512 x 20 epochs (20 steps in all)."""
    from sklearn.datasets import load_iris
    from sklearn.metrics import f1_score

    iris = load_iris()
    order = np.random.default_rng(0).permutation(150)
    parts = {"train": order[:120], "validation": order[120:135], "test": order[135:]}
    names = [f"f{i}" for i in range(4)]

    def table(rows, weight=False):
        columns = {n: iris.data[rows, i] for i, n in enumerate(names)}
        columns["label"] = iris.target_names[iris.target[rows]]
        if weight:
            columns[WEIGHT_COLUMN] = np.ones(len(rows))
        return pa.table(columns)

    spec = FeatureSpec(label="label", numeric=names, weight=WEIGHT_COLUMN)
    result = train_model(
        ArrowTableSource(table(parts["train"], True)),
        ArrowTableSource(table(parts["validation"])),
        spec,
        tuple(iris.target_names),
        Hyperparameters(),
        tmp_path / "model",
    )
    budget = result.metadata["training_budget"]
    assert (budget["batch_size"], budget["steps_per_epoch"]) == (32, 4)
    assert budget["batch_size_source"] == budget["epochs_source"] == "auto"
    assert budget["epochs_run"] > 20 and budget["best_epoch"] >= 10
    test = table(parts["test"])
    features = {n: tf.constant(test.column(n).to_numpy(), tf.float32) for n in names}
    out = tf.saved_model.load(str(result.model_dir / "saved_model")).signatures["serving_default"](
        **features
    )
    labels = iris.target[parts["test"]]
    assert f1_score(labels, out["class_id"].numpy(), average="macro") >= 0.9
