"""The champion a run competes with: same problem, same rows, and a compare-and-set promotion.

Two overlapping runs are interleaved for real: both look the champion up before either
registers (a barrier between lookup and register), in both orders, in threads and in separate
processes against one local registry, and against the fake Vertex server. The rescorer used by
the interleaving tests returns a version's registered figures, standing in for "the same rows";
``test_rescore_scores_the_champion_on_this_runs_rows`` scores real exported models.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import duckdb
import pytest
from conftest_models import build_tiny_model, make_table

from fakes.vertex import FakeVertex
from vertex_imbalanced.artifacts import MODEL_COMPLETE_FILE
from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.evaluation.evaluate import evaluate_model
from vertex_imbalanced.registry.base import CHAMPION_ALIAS
from vertex_imbalanced.registry.champion import (
    PROBLEM_ID_LABEL,
    ChampionCheck,
    Problem,
    comparable_champion,
    default_model_name,
    problem_id,
    rescore,
    resolve_model_name,
)
from vertex_imbalanced.registry.local import LocalRegistry, validate_model_name
from vertex_imbalanced.registry.vertex import VertexRegistry, validate_display_name
from vertex_imbalanced.warehouse.prepare import PreparedData

NAME = "churn-model"
PROBLEM = Problem("churn", ("stayed", "churned"))
GOOD, BAD = 0.863, 0.296  # the figures of the overlapping runs in the issue


def metrics_for(macro_f1: float, classes=PROBLEM.classes) -> dict:
    return {"classes": list(classes), "macro_f1": macro_f1, "confusion_matrix": [[3, 1], [0, 2]]}


def registered_figures(version):
    return version.metrics


@pytest.fixture
def model_dir(tmp_path):
    root = tmp_path / "model"
    (root / "saved_model").mkdir(parents=True)
    (root / "saved_model" / "saved_model.pb").write_bytes(b"\x08\x01")
    (root / MODEL_COMPLETE_FILE).write_text("{}")  # the train step's completion marker
    return root


# --------------------------------------------------------------------------- names and problems
def test_default_model_names_do_not_collide_and_are_valid_everywhere():
    names = {
        default_model_name("bq://p.sales.customers", "churn"),
        default_model_name("bq://p.sales.customers", "fraud"),
        default_model_name("bq://p.crm.customers", "churn"),
        default_model_name("duckdb:///tmp/a.db?table=customers", "churn"),
        default_model_name("duckdb:///tmp/a.db?table=t", "my label"),
        default_model_name("duckdb:///tmp/a.db?table=t", "my_label"),
        default_model_name("duckdb:///tmp/a.db?table=t", "größe"),
        default_model_name("duckdb:///tmp/a.db?table=t", "gr_e"),
    }
    assert len(names) == 8
    for name in names:
        assert validate_model_name(name) == validate_display_name(name) == name
    assert default_model_name("bq://p.sales.customers", "churn") == "sales.customers-churn"
    # the file path is not part of the name: a re-imported copy finds its champion
    assert default_model_name("duckdb:///x/a.db?table=customers", "churn") == (
        default_model_name("duckdb:///y/b.db?table=customers", "churn")
    )
    long = default_model_name(f"bq://p.d.{'t' * 120}", "label")
    assert len(long) <= 128 and validate_model_name(long)
    assert resolve_model_name("mine", "bq://p.d.t", "y") == "mine"
    assert resolve_model_name("", "bq://p.d.t", "y") == "d.t-y"
    with pytest.raises(PipelineInputError, match="unsupported source URI 's3://b/t'"):
        default_model_name("s3://b/t", "y")


def test_problem_identity_is_label_and_ordered_classes():
    assert problem_id("churn", ["a", "b"]) == problem_id("churn", ("a", "b"))
    assert problem_id("churn", ["a", "b"]) != problem_id("churn", ["b", "a"])
    assert problem_id("churn", ["a", "b"]) != problem_id("fraud", ["a", "b"])
    assert problem_id("a", ["b", "c"]) != problem_id("a,b", ["c"])
    assert PROBLEM.labels() == {"problem_id": PROBLEM.id, "problem_label": "churn"}


def test_champion_of_another_problem_is_named_and_ignored(tmp_path, model_dir):
    registry = LocalRegistry(tmp_path / "registry")
    demo = Problem("label", ("0", "1", "2"))
    registry.register(
        NAME, str(model_dir), metrics_for(0.9445, demo.classes), demo.labels(), "demo", True
    )

    def must_not_score(version):
        raise AssertionError("a champion of another problem must not be scored")

    found = comparable_champion(registry.champion(NAME), PROBLEM, must_not_score, NAME)
    assert found.version is None and found.metrics == {}
    assert "champion version 1 of 'churn-model' solves another problem" in found.note
    assert "label 'label', classes ['0', '1', '2']" in found.note
    assert "this run: label 'churn', classes ['stayed', 'churned']" in found.note
    assert found.note.endswith("ignored")

    # the gate saw no comparable champion; registration agrees and promotes
    check = ChampionCheck(PROBLEM, metrics_for(0.5), compared_version="1", min_value=0.3)
    new = registry.register(
        NAME, str(model_dir), metrics_for(0.5), PROBLEM.labels(), "run", True, promotion=check
    )
    assert new.is_champion
    assert new.labels[PROBLEM_ID_LABEL] == PROBLEM.id


# --------------------------------------------------------------------------- re-scoring
def _split_tables(tmp_path: Path, seed: int) -> PreparedData:
    db = tmp_path / f"warehouse{seed}.db"
    con = duckdb.connect(str(db))
    for name, offset in (("test", 1), ("validation", 2)):
        con.register("t", make_table(["ok", "fraud"], [300, 60], seed=seed + offset))
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM t")
        con.unregister("t")
    con.close()
    spec = FeatureSpec(label="label", numeric=("x",), categorical=("color",), key="id")
    return PreparedData(
        train_uri=f"duckdb://{db}?table=test",
        validation_uri=f"duckdb://{db}?table=validation",
        test_uri=f"duckdb://{db}?table=test",
        classes=("ok", "fraud"),
        spec=spec,
        split_counts={},
        imbalance={},
    )


def test_rescore_scores_the_champion_on_this_runs_rows(tmp_path):
    classes = ("ok", "fraud")
    problem = Problem("label", classes)
    champion_dir = build_tiny_model(tmp_path / "champion", classes, scale=3.0)
    registry = LocalRegistry(tmp_path / "registry")
    # the figures registered with the champion come from an older (different) test split
    stored = {"classes": list(classes), "macro_f1": 0.99}
    registry.register(NAME, str(champion_dir), stored, problem.labels(), "old", True)

    this_run = _split_tables(tmp_path, seed=10)
    found = comparable_champion(
        registry.champion(NAME), problem, lambda v: rescore(v, this_run), NAME
    )
    assert found.version is not None and found.version.version == "1"
    direct = evaluate_model(
        champion_dir,
        this_run.test_uri,
        this_run.validation_uri,
        this_run.spec,
        classes,
        tmp_path / "direct",
    ).metrics
    assert found.metrics["macro_f1"] == pytest.approx(direct["macro_f1"], abs=1e-12)
    assert found.metrics["num_examples"] == 360
    assert found.metrics["macro_f1"] != stored["macro_f1"]

    # a champion that cannot score this run's rows (its classes differ) is named and ignored
    other_run = dataclasses.replace(this_run, classes=("a", "b"))
    found = comparable_champion(
        registry.champion(NAME), problem, lambda v: rescore(v, other_run), NAME
    )
    assert found.version is None
    assert "cannot be scored on this run's test split" in found.note
    # ignored, but seen: registration then finds the champion unchanged and may promote
    assert found.seen == "1"
    assert "trained for classes ['ok', 'fraud']" in found.note


# --------------------------------------------------------------------------- interleaved, local
def _interleave(register_first, register_second, look_up):
    """Both runs look up the champion, then (barrier) register in the given order."""
    seen = {}
    barrier = threading.Barrier(2)
    turn = threading.Event()
    results = {}

    def run(name, register, wait_for_turn):
        seen[name] = look_up()
        barrier.wait(timeout=30)
        if wait_for_turn:
            assert turn.wait(timeout=60)
        results[name] = register(seen[name])
        turn.set()

    threads = [
        threading.Thread(target=run, args=("first", register_first, False)),
        threading.Thread(target=run, args=("second", register_second, True)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert set(results) == {"first", "second"}, "a run failed"
    return seen, results


def _local_run(registry, model_dir, run, f1):
    def register(seen):
        check = ChampionCheck(
            PROBLEM,
            metrics_for(f1),
            compared_version=seen.version if seen else "",
            min_value=0.2,
            rescorer=registered_figures,
        )
        return registry.register(
            NAME, str(model_dir), metrics_for(f1), PROBLEM.labels(), run, True, promotion=check
        )

    return register


@pytest.mark.parametrize("order", ["good-first", "bad-first"])
def test_overlapping_local_runs_keep_the_better_champion(tmp_path, model_dir, order):
    registry = LocalRegistry(tmp_path / "registry")
    good = _local_run(registry, model_dir, "run-good", GOOD)
    bad = _local_run(registry, model_dir, "run-bad", BAD)
    first, second = (good, bad) if order == "good-first" else (bad, good)
    seen, results = _interleave(first, second, lambda: registry.champion(NAME))

    assert seen == {"first": None, "second": None}  # both gates saw no champion
    champion = registry.champion(NAME)
    assert champion.run_id == "run-good" and champion.metrics["macro_f1"] == GOOD
    late = results["second"]
    assert "became champion after the gate saw no champion" in late.promotion
    if order == "good-first":
        assert not late.is_champion
        assert "0.2960 is below the champion's 0.8630" in late.promotion
    else:
        assert late.is_champion and "promoted" in late.promotion
    assert sorted(v.run_id for v in registry.versions(NAME)) == ["run-bad", "run-good"]


def test_overlapping_processes_keep_the_better_champion(tmp_path, model_dir):
    """Two processes, one registry directory: the file lock makes promotion a compare-and-set."""
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from vertex_imbalanced.registry.champion import ChampionCheck, Problem
        from vertex_imbalanced.registry.local import LocalRegistry
        root, barrier = sys.argv[4], sys.argv[5]
        run, f1, delay = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
        problem = Problem("churn", ("stayed", "churned"))
        metrics = {{"classes": list(problem.classes), "macro_f1": f1}}
        registry = LocalRegistry(root)
        seen = registry.champion({NAME!r})
        open(os.path.join(barrier, run), "w").close()
        while len(os.listdir(barrier)) < 2:  # barrier: both have looked up
            time.sleep(0.005)
        time.sleep(delay)
        check = ChampionCheck(problem, metrics, compared_version=seen.version if seen else "",
                              min_value=0.2, rescorer=lambda v: v.metrics)
        v = registry.register({NAME!r}, {str(model_dir)!r}, metrics, problem.labels(), run,
                              True, promotion=check)
        print(v.version, v.is_champion, v.promotion)
        """
    )
    # no delay (racing), the good run late, the bad run late
    for i, (good_delay, bad_delay) in enumerate(((0.0, 0.0), (0.3, 0.0), (0.0, 0.3))):
        root, barrier = tmp_path / f"registry{i}", tmp_path / f"barrier{i}"
        barrier.mkdir()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, run, str(f1), str(delay), str(root), str(barrier)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for run, f1, delay in (("good", GOOD, good_delay), ("bad", BAD, bad_delay))
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        registry = LocalRegistry(root)
        assert registry.champion(NAME).run_id == "good", (good_delay, bad_delay)
        assert sorted(v.run_id for v in registry.versions(NAME)) == ["bad", "good"]


# --------------------------------------------------------------------------- interleaved, Vertex
@pytest.fixture
def fake():
    with FakeVertex() as server:
        yield server


def _vertex(fake, **kwargs):
    return VertexRegistry("p", "us-central1", api_endpoint=fake.endpoint, **kwargs)


def _vertex_run(registry, model_dir, run, f1):
    def register(seen):
        check = ChampionCheck(
            PROBLEM,
            metrics_for(f1),
            compared_version=seen.version if seen else "",
            min_value=0.2,
            rescorer=registered_figures,
        )
        return registry.register(
            NAME,
            str(model_dir),
            metrics_for(f1),
            PROBLEM.labels(),
            run,
            True,
            artifact_uri=f"gs://bucket/{run}/model",
            promotion=check,
        )

    return register


@pytest.mark.parametrize("order", ["good-first", "bad-first"])
def test_overlapping_vertex_runs_keep_the_better_champion(fake, model_dir, order):
    registry = _vertex(fake)
    good = _vertex_run(registry, model_dir, "run-good", GOOD)
    bad = _vertex_run(registry, model_dir, "run-bad", BAD)
    first, second = (good, bad) if order == "good-first" else (bad, good)
    seen, results = _interleave(first, second, lambda: registry.champion(NAME))

    assert seen == {"first": None, "second": None}
    champion = registry.champion(NAME)
    assert champion.run_id == "run-good" and champion.metrics["macro_f1"] == GOOD
    assert champion.labels[PROBLEM_ID_LABEL] == PROBLEM.id
    late = results["second"]
    assert "became champion after the gate saw no champion" in late.promotion
    assert late.is_champion == (order == "bad-first")


def test_vertex_promotion_lost_in_the_window_is_reported(fake, model_dir):
    registry = _vertex(fake)
    older = registry.register(
        NAME, str(model_dir), metrics_for(0.5), PROBLEM.labels(), "run-a", False,
        artifact_uri="gs://bucket/a/model",
    )  # fmt: skip
    model_id = older.resource_name.rsplit("/", 1)[1]

    def other_run_promotes():  # another run moves champion to version 1 in the window
        fake.version(model_id, "1")["versionAliases"].append(CHAMPION_ALIAS)

    # our merge of champion onto version 2 is the 2nd alias merge of run-b
    calls = {"n": 0}

    def maybe_promote_other():
        calls["n"] += 1
        if calls["n"] == 2:
            other_run_promotes()

    fake.before_request(maybe_promote_other, method="POST", path_contains="mergeVersionAliases",
                        times=5)  # fmt: skip
    check = ChampionCheck(PROBLEM, metrics_for(0.9), min_value=0.2, rescorer=registered_figures)
    new = registry.register(
        NAME, str(model_dir), metrics_for(0.9), PROBLEM.labels(), "run-b", True,
        artifact_uri="gs://bucket/b/model", promotion=check,
    )  # fmt: skip
    assert not new.is_champion
    assert "version 1 was promoted by another run while version 2 was being promoted" in (
        new.promotion
    )
    assert registry.champion(NAME).version == "1"


def test_vertex_upload_is_encrypted_with_the_kms_key(fake, model_dir):
    key = "projects/p/locations/us-central1/keyRings/r/cryptoKeys/k"
    registry = _vertex(fake, kms_key=key)
    version = registry.register(
        NAME, str(model_dir), metrics_for(0.8), {}, "run", True, artifact_uri="gs://b/m"
    )
    (upload,) = fake.calls("POST", "models:upload")
    assert upload.body["model"]["encryptionSpec"] == {"kmsKeyName": key}
    model_id = version.resource_name.rsplit("/", 1)[1]
    assert fake.version(model_id, "1")["encryptionSpec"]["kmsKeyName"] == key

    # without a key nothing is sent; a malformed key fails before any call
    plain = _vertex(fake)
    plain.register(
        NAME, str(model_dir), metrics_for(0.8), {}, "run-2", False, artifact_uri="gs://b/n"
    )
    assert "encryptionSpec" not in fake.calls("POST", "models:upload")[-1].body["model"]
    with pytest.raises(PipelineInputError, match="kms_key must be projects/P/locations/L"):
        _vertex(fake, kms_key="my-key")


def test_fake_refuses_a_key_of_another_region(fake, model_dir):
    from vertex_imbalanced.errors import RegistryError

    registry = _vertex(fake, kms_key="projects/p/locations/europe-west4/keyRings/r/cryptoKeys/k")
    with pytest.raises(RegistryError, match="must be in the same region as the resource"):
        registry.register(
            NAME, str(model_dir), metrics_for(0.8), {}, "r", True, artifact_uri="gs://b/m"
        )
    assert fake.models == {}


def test_no_promotion_rule_keeps_the_old_behaviour(tmp_path, model_dir):
    registry = LocalRegistry(tmp_path / "registry")
    registry.register(NAME, str(model_dir), metrics_for(GOOD), {}, "a", True)
    later = registry.register(NAME, str(model_dir), metrics_for(BAD), {}, "b", True)
    assert later.is_champion and later.promotion == "promoted without a champion check"
