"""LocalRegistry: versions, aliases, idempotency, concurrent processes and crashes."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vertex_imbalanced.artifacts import (
    MODEL_COMPLETE_FILE,
    REGISTRY_LABELS_FILE,
    REGISTRY_MODEL_DIR,
    REGISTRY_RUN_ID_FILE,
    SAVED_MODEL_DIR,
    SAVED_MODEL_PROTO,
)
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.registry.base import RegisteredVersion, Registry, open_registry
from vertex_imbalanced.registry.local import COMPLETE_MARKER, LocalRegistry

NAME = "fraud-model"


def metrics_for(macro_f1: float) -> dict:
    return {"classes": ["neg", "pos"], "macro_f1": macro_f1, "confusion_matrix": [[3, 1], [0, 2]]}


@pytest.fixture
def model_dir(tmp_path):
    # A stand-in artifact: the registry checks for saved_model.pb and copies the directory;
    # test_champion_loads_as_a_saved_model round-trips a real SavedModel.
    root = tmp_path / "model"
    (root / "saved_model" / "variables").mkdir(parents=True)
    (root / "saved_model" / "saved_model.pb").write_bytes(b"\x08\x01")
    (root / "model_metadata.json").write_text('{"classes": ["neg", "pos"]}')
    (root / MODEL_COMPLETE_FILE).write_text("{}")  # the train step's completion marker
    return root


@pytest.fixture
def registry(tmp_path):
    return LocalRegistry(tmp_path / "registry")


def register(registry, model_dir, run, champion, f1=0.5):
    return registry.register(NAME, str(model_dir), metrics_for(f1), {"run": run}, run, champion)


def test_versions_increment_and_champion_moves_only_when_asked(registry, model_dir):
    assert isinstance(registry, Registry)
    first = register(registry, model_dir, "run-a", True, 0.7)
    assert (first.version, first.aliases) == ("1", ("challenger", "champion"))
    second = register(registry, model_dir, "run-b", False, 0.9)
    assert (second.version, second.aliases) == ("2", ("challenger",))

    champ = registry.champion(NAME)
    assert (champ.version, champ.run_id, champ.metrics["macro_f1"]) == ("1", "run-a", 0.7)
    assert champ.aliases == ("champion",)

    third = register(registry, model_dir, "run-c", True, 0.95)
    assert registry.champion(NAME).version == "3" == third.version
    assert registry.aliases(NAME) == {"champion": "3", "challenger": "3"}
    assert [v.version for v in registry.versions(NAME)] == ["1", "2", "3"]

    vdir = Path(third.uri)
    assert vdir == registry.root / NAME / "3"
    assert (vdir / REGISTRY_MODEL_DIR / SAVED_MODEL_DIR / SAVED_MODEL_PROTO).is_file()
    assert json.loads((vdir / REGISTRY_LABELS_FILE).read_text()) == {"run": "run-c"}
    assert (vdir / REGISTRY_RUN_ID_FILE).read_text() == "run-c"
    assert RegisteredVersion.from_dict(json.loads(third.to_json())) == third


def test_same_run_is_registered_once(registry, model_dir):
    first = register(registry, model_dir, "run-a", False)
    again = register(registry, model_dir, "run-a", True)
    assert again.version == first.version == "1"
    assert len(registry.versions(NAME)) == 1
    # the rerun of the newest version finishes what it asked for (champion)
    assert registry.champion(NAME).version == "1"
    register(registry, model_dir, "run-b", False)
    # an older run re-registering does not steal aliases from newer versions
    register(registry, model_dir, "run-a", False)
    assert registry.aliases(NAME) == {"champion": "1", "challenger": "2"}
    assert not list((registry.root / NAME).glob(".tmp-*"))


def _run_python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stderr=subprocess.PIPE)


def test_concurrent_registrations_get_distinct_versions(registry, model_dir, tmp_path):
    go = tmp_path / "go"
    procs = [
        _run_python(
            f"""
            import os, time
            from vertex_imbalanced.registry.local import COMPLETE_MARKER, LocalRegistry
            while not os.path.exists({str(go)!r}):  # start together
                time.sleep(0.001)
            LocalRegistry({str(registry.root)!r}).register(
                {NAME!r}, {str(model_dir)!r}, {{"macro_f1": 0.{i}}}, {{}}, "run-{i}", {i == 0})
            """
        )
        for i in range(6)
    ]
    time.sleep(0.5)  # let every child reach the start line
    go.touch()
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
    versions = registry.versions(NAME)
    assert [v.version for v in versions] == ["1", "2", "3", "4", "5", "6"]
    assert sorted(v.run_id for v in versions) == [f"run-{i}" for i in range(6)]
    assert registry.champion(NAME).run_id == "run-0"
    assert registry.aliases(NAME)["challenger"] in {"1", "2", "3", "4", "5", "6"}
    assert not list((registry.root / NAME).glob(".tmp-*"))


def _crash_at(registry, model_dir, run: str, champion: bool, call: str) -> int:
    """Register in a child process that dies (os._exit) when it reaches ``os.<call>``."""
    proc = _run_python(
        f"""
        import os
        from vertex_imbalanced.registry.local import COMPLETE_MARKER, LocalRegistry
        os.{call} = lambda *a, **k: os._exit(17)
        LocalRegistry({str(registry.root)!r}).register(
            {NAME!r}, {str(model_dir)!r}, {{"macro_f1": 0.9}}, {{}}, {run!r}, {champion})
        """
    )
    return proc.wait(timeout=60)


def _crash_opening(registry, model_dir, run: str, file_name: str) -> int:
    """Register in a child process that dies when it opens a file called ``file_name``."""
    proc = _run_python(
        f"""
        import builtins, os
        from vertex_imbalanced.registry.local import COMPLETE_MARKER, LocalRegistry
        real_open = builtins.open
        def dying_open(path, *a, **k):
            if os.path.basename(str(path)) == {file_name!r}:
                os._exit(17)
            return real_open(path, *a, **k)
        builtins.open = dying_open
        LocalRegistry({str(registry.root)!r}).register(
            {NAME!r}, {str(model_dir)!r}, {{"macro_f1": 0.9}}, {{}}, {run!r}, True)
        """
    )
    return proc.wait(timeout=60)


@pytest.mark.parametrize("file_name", ["metrics.json", COMPLETE_MARKER])
def test_crash_before_the_marker_leaves_no_version(registry, model_dir, file_name):
    register(registry, model_dir, "run-a", True)
    assert _crash_opening(registry, model_dir, "run-b", file_name) == 17
    # the dead process's directory exists but is not a version: no marker
    assert (registry.root / NAME / "2").is_dir()
    assert [v.version for v in registry.versions(NAME)] == ["1"]
    assert registry.get(NAME, "2") is None
    assert registry.champion(NAME).run_id == "run-a"

    retried = register(registry, model_dir, "run-b", True)
    assert retried.version == "2" and retried.is_champion
    assert (Path(retried.uri) / COMPLETE_MARKER).is_file()
    assert [v.run_id for v in registry.versions(NAME)] == ["run-a", "run-b"]


@pytest.fixture
def no_directory_renames(monkeypatch):
    """The file system of a gcsfuse mount without rename-dir-limit: directories never move."""
    refused = []

    def guard(real):
        def rename(src, dst, *args, **kwargs):
            if os.path.isdir(src):
                refused.append((src, dst))
                raise OSError(errno.EPERM, "Operation not permitted (directory rename)", src)
            return real(src, dst, *args, **kwargs)

        return rename

    monkeypatch.setattr(os, "rename", guard(os.rename))
    monkeypatch.setattr(os, "replace", guard(os.replace))
    return refused


def test_publishing_renames_no_directory(registry, model_dir, no_directory_renames):
    first = register(registry, model_dir, "run-a", True, 0.7)
    second = register(registry, model_dir, "run-b", False, 0.8)
    again = register(registry, model_dir, "run-b", True, 0.8)  # retry finishes the promotion
    assert (first.version, second.version, again.version) == ("1", "2", "2")
    assert registry.aliases(NAME) == {"champion": "2", "challenger": "2"}
    assert no_directory_renames == []
    for v in registry.versions(NAME):
        vdir = Path(v.uri)
        assert (vdir / COMPLETE_MARKER).is_file()
        assert (vdir / REGISTRY_MODEL_DIR / SAVED_MODEL_DIR / SAVED_MODEL_PROTO).is_file()


def test_versions_published_by_a_rename_are_still_read(registry, model_dir):
    register(registry, model_dir, "run-a", True)
    (registry.root / NAME / "1" / COMPLETE_MARKER).unlink()
    (registry.root / NAME / "1" / ".writer").unlink()  # as an older release left it
    assert registry.champion(NAME).run_id == "run-a"
    assert register(registry, model_dir, "run-b", False).version == "2"


def test_crash_before_alias_update_is_completed_by_the_retry(registry, model_dir):
    register(registry, model_dir, "run-a", True)
    assert _crash_at(registry, model_dir, "run-b", True, "replace") == 17
    # the complete version is visible, the aliases still point at the old champion
    assert [v.version for v in registry.versions(NAME)] == ["1", "2"]
    assert registry.aliases(NAME) == {"champion": "1", "challenger": "1"}

    retried = register(registry, model_dir, "run-b", True)
    assert retried.version == "2"
    assert len(registry.versions(NAME)) == 2
    assert registry.aliases(NAME) == {"champion": "2", "challenger": "2"}


def test_bad_input_is_refused_before_writing(registry, model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        (dict(model_name="../escape"), "invalid model name"),
        (dict(model_name=""), "invalid model name"),
        (dict(alias="champion"), "reserved"),
        (dict(alias="Bad Alias"), "invalid alias"),
        (dict(run_id=" "), "run_id"),
        (dict(model_dir=str(tmp_path / "missing")), "does not exist"),
        (dict(model_dir=str(tmp_path / "empty")), "no SavedModel"),
    ]
    for override, message in cases:
        kwargs = (
            dict(
                model_name=NAME,
                model_dir=str(model_dir),
                metrics={},
                labels={},
                run_id="r",
                make_champion=True,
            )
            | override
        )
        with pytest.raises(PipelineInputError, match=message):
            registry.register(**kwargs)
    assert not registry.root.exists() or not registry.versions(NAME)
    assert registry.champion(NAME) is None


def test_open_registry_and_champion_one_liner(tmp_path, model_dir):
    uri = f"local://{tmp_path / 'reg'}"
    register(open_registry(uri), model_dir, "run-a", True)
    assert open_registry(uri).champion(NAME).run_id == "run-a"
    for bad, message in (
        ("local://relative/dir", "use local:///absolute/directory"),
        ("local:relative", "use local:///absolute/directory"),
        ("file:///x", "unknown registry URI 'file:///x'"),
    ):
        with pytest.raises(PipelineInputError, match=message):
            open_registry(bad)


def test_champion_loads_as_a_saved_model(registry, tmp_path):
    import tensorflow as tf

    module = tf.Module()
    module.scale = tf.Variable(3.0)
    module.f = tf.function(
        lambda x: x * module.scale, input_signature=[tf.TensorSpec([None], tf.float32)]
    )
    tf.saved_model.save(module, str(tmp_path / "real" / "saved_model"))
    (tmp_path / "real" / MODEL_COMPLETE_FILE).write_text("{}")  # as the train step marks it
    registry.register(NAME, str(tmp_path / "real"), metrics_for(0.8), {}, "run-a", True)

    champion = registry.champion(NAME)
    assert champion.artifact_uri == str(Path(champion.uri) / REGISTRY_MODEL_DIR)
    loaded = tf.saved_model.load(str(Path(champion.artifact_uri) / SAVED_MODEL_DIR))
    assert loaded.f(tf.constant([2.0])).numpy().tolist() == [6.0]


def test_a_train_output_without_its_completion_marker_is_not_registered(registry, model_dir):
    (model_dir / MODEL_COMPLETE_FILE).unlink()  # a killed train step's leftover
    with pytest.raises(PipelineInputError, match="is incomplete"):
        register(registry, model_dir, "run-1", champion=True)
    assert registry.versions(NAME) == []
