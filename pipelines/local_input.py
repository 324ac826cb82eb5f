"""run_local's options and input, checked in one pass before anything runs (no KFP here).

:class:`LocalRunOptions` holds ``run_local.py``'s options; :func:`options_from_text` converts the
command line's text (collecting every bad value), :func:`option_problems` checks the values,
:func:`prepare_input` stages the source in the run's work database and checks the table against
the options (:func:`vertex_imbalanced.warehouse.local_import.check_source`). Every problem is a
line of one :class:`~vertex_imbalanced.errors.InputProblemsError`. :class:`OutputLock` keeps a
second run out of a busy output directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from vertex_imbalanced import options_check as check
from vertex_imbalanced.config import (
    DEFAULT_IMBALANCE_MODE,
    DEFAULT_NA_VALUES,
    IMBALANCE_MODES,
    LABEL_POLICIES,
    FeatureSpec,
)
from vertex_imbalanced.errors import OutputBusyError, PipelineInputError
from vertex_imbalanced.warehouse.local_import import (
    ROW_KEY,
    DataRequest,
    SourceCheck,
    StagedSource,
    check_source,
    describe_roles,
    split_source,
    stage_demo,
    stage_source,
)

DEFAULT_OUTPUT_DIR = "build/local_run"
DEFAULT_REGISTRY = "build/registry"
DEFAULT_ROWS = 100_000
DEFAULT_SPLIT_RATIOS = (0.8, 0.1, 0.1)
LOCK_FILE = ".run.lock"


# ----------------------------------------------------------------------------- options
@dataclasses.dataclass(frozen=True)
class LocalRunOptions:
    """Everything a local run needs (``run_local.py``'s options, parsed).

    Attributes:
        source: CSV/Parquet path or DuckDB URI; None for the generated demo table.
        label, key: label and unique row key columns (label required with ``source``; a
            CSV/Parquet file without ``key`` gets a ``row_key`` column).
        features: feature columns (None: all other columns, roles from their types).
        ignore: columns left out.
        classes: class names in id order (None: inferred from the train split, sorted).
        label_policy: ``error`` or ``skip`` rows whose label is NULL (or outside ``classes``).
        na_values: CSV text read as missing (None: ``config.DEFAULT_NA_VALUES``).
        feature_config: YAML/JSON feature-config file (the pipeline's ``feature_config``);
            the options above override its keys.
        split_ratios: train, validation, test shares (None: 0.8, 0.1, 0.1).
        rows, seed: size and seed of the demo table.
        output_dir: where the run writes (summary, log, work database, kfp.local's root).
        registry: local registry directory (shared across runs: champions persist).
        model_name: registered model name (None: the pipeline's default).
        imbalance_mode, max_ratio: how the train split is rebalanced (max_ratio 0: no cap).
        min_metric, tolerance: the gate's settings.
        epochs, batch_size, learning_rate, hidden_units: hyperparameters (None: defaults).
        verbose: echo every line kfp.local prints instead of one line per step event.
    """

    source: str | None = None
    label: str | None = None
    key: str | None = None
    features: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    classes: tuple[str, ...] | None = None
    label_policy: str | None = None
    na_values: tuple[str, ...] | None = None
    feature_config: str | None = None
    split_ratios: tuple[float, ...] | None = None
    rows: int = DEFAULT_ROWS
    seed: int = 7
    output_dir: str = DEFAULT_OUTPUT_DIR
    registry: str = DEFAULT_REGISTRY
    model_name: str | None = None
    imbalance_mode: str = DEFAULT_IMBALANCE_MODE
    max_ratio: float = 10.0
    min_metric: float = 0.5
    tolerance: float = 0.0
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    hidden_units: tuple[int, ...] | None = None
    verbose: bool = False

    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters set on the command line (the rest keep their defaults).

        Raises:
            InputProblemsError: invalid values, each named (checked here, not three steps in).
        """
        values = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "hidden_units": list(self.hidden_units) if self.hidden_units else None,
        }
        hyper = {name: value for name, value in values.items() if value is not None}
        problems = check.Problems()
        problems.extend(check.hyperparameter_problems(hyper, HYPERPARAMETER_OPTIONS))
        problems.raise_if_any()
        return hyper


HYPERPARAMETER_OPTIONS = {
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "learning_rate": "--learning-rate",
    "hidden_units": "--hidden-units",
}
TEXT_OPTIONS = {
    "int": ("rows", "seed", "epochs", "batch_size"),
    "float": ("max_ratio", "min_metric", "tolerance", "learning_rate"),
    "names": ("features", "ignore", "classes"),
}
"""Command-line options given as text and converted by :func:`options_from_text`."""


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def options_from_text(values: Mapping[str, Any]) -> tuple[LocalRunOptions, list[str]]:
    """Convert ``run_local.py``'s text options, collecting every value that does not convert.

    Args:
        values: option name (``LocalRunOptions`` field) -> text (or a typed default).

    Returns:
        The options (fields that did not convert keep their defaults) and one problem line
        per bad value.
    """
    problems = check.Problems()
    out: dict[str, Any] = {}
    for name, value in values.items():
        if not isinstance(value, str):
            out[name] = value
        elif name in TEXT_OPTIONS["int"]:
            try:
                out[name] = int(value)
            except ValueError:
                problems.add(f"{_option(name)}: {value!r} is not an integer")
        elif name in TEXT_OPTIONS["float"]:
            number = check.parse_number(_option(name), value, problems)
            if number is not None:
                out[name] = number
        elif name in TEXT_OPTIONS["names"]:
            out[name] = check.name_list(value)
        elif name == "hidden_units":
            out[name] = check.int_list("--hidden-units", value, problems)
        elif name == "split_ratios":
            out[name] = check.parse_ratios("--split-ratios", value, problems)
        elif name == "na_values":
            out[name] = tuple(item.strip() for item in value.split(","))
        else:
            out[name] = value
    return LocalRunOptions(**out), problems.lines


def option_problems(options: LocalRunOptions) -> list[str]:
    """Every problem of the option values alone (no file or table read), one line each."""
    from vertex_imbalanced.registry.local import validate_model_name

    p = check.Problems()
    p.add(check.finite_number("--min-metric", options.min_metric, minimum=0.0, maximum=1.0))
    p.add(check.finite_number("--tolerance", options.tolerance, minimum=0.0))
    ratio = check.finite_number("--max-ratio", options.max_ratio, minimum=0.0)
    if not ratio and 0 < options.max_ratio < 1:
        ratio = f"--max-ratio: {options.max_ratio} must be >= 1 (or 0: no cap)"
    p.add(ratio)
    p.add(check.one_of("--imbalance-mode", options.imbalance_mode, IMBALANCE_MODES))
    if options.label_policy is not None:
        p.add(check.one_of("--label-policy", options.label_policy, LABEL_POLICIES))
    p.add(check.matches("--model-name", options.model_name, validate_model_name))
    if options.split_ratios is not None:
        p.add(check.split_ratios("--split-ratios", options.split_ratios))
    if options.source is None and options.rows <= 0:
        p.add(f"--rows: must be > 0, got {options.rows}")
    if options.source is not None:
        p.attempt("--source", lambda: split_source(options.source))
        if not options.label:
            p.add("--label: required with --source")
    if options.classes and len(set(options.classes)) != len(options.classes):
        p.add(f"--classes: duplicate class names in {list(options.classes)}")
    taken = {options.label, options.key} - {None}
    for option, names in (("--features", options.features), ("--ignore", options.ignore)):
        for name in sorted(taken & set(names or ())):
            p.add(f"{option}: {name!r} is the label or the key column")
    both = set(options.features or ()) & set(options.ignore or ())
    if both:
        p.add(f"--ignore: {sorted(both)} are also listed in --features")
    hyper = {
        "epochs": options.epochs,
        "batch_size": options.batch_size,
        "learning_rate": options.learning_rate,
        "hidden_units": list(options.hidden_units) if options.hidden_units else None,
    }
    given = {k: v for k, v in hyper.items() if v is not None}
    p.extend(check.hyperparameter_problems(given, HYPERPARAMETER_OPTIONS))
    return p.lines


def read_feature_config(path: str | None, problems: check.Problems) -> dict[str, Any]:
    """The feature-config file as a dict (empty if none); unreadable files and keys -> problems."""
    if path is None:
        return {}
    known = {f.name for f in dataclasses.fields(FeatureSpec)}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        problems.add(f"--feature-config: cannot read {path}: {err}")
        return {}
    if not isinstance(data, dict):
        problems.add(f"--feature-config: {path} is not a mapping of feature-config keys")
        return {}
    for name in sorted(set(data) - known):
        problems.add(f"--feature-config: unknown key {name!r} in {path} (known: {sorted(known)})")
    if data.get("weight"):
        problems.add("--feature-config: 'weight' is not supported (the prepare step adds it)")
    return {k: v for k, v in data.items() if k in known}


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return check.name_list(value) or ()
    from vertex_imbalanced.config import class_name

    return tuple(class_name(v) for v in value)


def data_request(
    options: LocalRunOptions, config: Mapping[str, Any], default_key: str | None
) -> DataRequest:
    """The table request: command-line options over the feature-config file's keys."""
    features = options.features
    numeric = categorical = ()
    if features is None:
        numeric, categorical = _names(config.get("numeric")), _names(config.get("categorical"))
    na_values = options.na_values
    if na_values is None:
        na_values = _names(config["na_values"]) if "na_values" in config else DEFAULT_NA_VALUES
    return DataRequest(
        label=options.label or config.get("label"),
        key=options.key or config.get("key") or default_key,
        features=features,
        numeric=numeric,
        categorical=categorical,
        ignored=options.ignore if options.ignore is not None else _names(config.get("ignored")),
        classes=options.classes if options.classes is not None else _names(config.get("classes")),
        label_policy=options.label_policy or config.get("label_policy") or "error",
        na_values=tuple(na_values),
        split_ratios=tuple(options.split_ratios or DEFAULT_SPLIT_RATIOS),
    )


# ----------------------------------------------------------------------------- output directory
class OutputLock:
    """Exclusive use of an output directory for one run (``<dir>/.run.lock``, ``flock``).

    The lock is the kernel's: it goes away with the process, so a crashed run never leaves
    a directory busy. A directory this lock created is removed again on :meth:`release`
    with ``remove_if_created`` when it holds nothing but the lock file.
    """

    def __init__(self, path: str | Path) -> None:
        """Create the directory if needed and take its lock.

        Raises:
            OutputBusyError: another run holds the lock (names the directory and its pid).
            PipelineInputError: the directory cannot be created or written.
        """
        import fcntl

        self.path = Path(path).resolve()
        self.created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise PipelineInputError(
                f"output directory {str(self.path)!r} is not writable: {err}"
            ) from err
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise OutputBusyError(
                f"output directory {str(self.path)!r} is busy: another run (pid {holder}) is "
                "writing there; wait for it to finish or pass another --output-dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self, *, remove_if_created: bool = False) -> None:
        """Give the directory back (the lock file stays: removing it would race)."""
        import fcntl

        if self._fd < 0:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1
        if remove_if_created and self.created:
            with contextlib.suppress(OSError):
                (self.path / LOCK_FILE).unlink()
                self.path.rmdir()


def check_output_dir(path: str | Path) -> Path:
    """Create a directory and prove it is writable.

    Returns:
        The absolute path.

    Raises:
        PipelineInputError: it cannot be created or written (names it and the OS error).
    """
    out = Path(path).resolve()
    probe = out / ".write-probe"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PipelineInputError(f"output directory {str(out)!r} is not writable: {err}") from err
    return out


# ----------------------------------------------------------------------------- the input
@dataclasses.dataclass(frozen=True)
class LocalSource:
    """The accepted table a local run reads.

    Attributes:
        uri: ``duckdb:///abs/file.db?table=name`` in the run's work database.
        spec: every role, the classes in id order, the label policy.
        description: what the user named, for the summary.
        check: the outcome of the checks (warnings, label counts, skipped rows).
        declared_classes: the classes were given (``--classes`` / feature config), not inferred.
    """

    uri: str
    spec: FeatureSpec
    description: str
    check: SourceCheck
    declared_classes: bool = False


def _stage(
    options: LocalRunOptions,
    work_dir: Path,
    request: DataRequest,
    add_key: bool,
    problems: check.Problems,
) -> StagedSource | None:
    if options.source is None:
        return problems.attempt("--rows", lambda: stage_demo(work_dir, options.rows, options.seed))
    return problems.attempt(
        "--source",
        lambda: stage_source(
            options.source,
            work_dir,
            key=None if add_key else request.key,
            label=request.label,
            na_values=request.na_values,
        ),
    )


def prepare_input(
    options: LocalRunOptions, work_dir: Path, problems: check.Problems
) -> LocalSource | None:
    """Stage the source in ``work_dir`` and check it with the options: all problems at once.

    Appends every problem to ``problems``; the staged copy is moved into place only when
    there is none (and deleted otherwise).

    Returns:
        The accepted source, or None when there are problems.
    """
    from vertex_imbalanced.warehouse.demo_data import DEMO_SPEC

    config = read_feature_config(options.feature_config, problems)
    add_key = False
    if options.source is None and options.rows <= 0:
        return None  # reported by option_problems
    if options.source is not None and split_source_or_none(options.source) is None:
        return None  # reported by option_problems
    if options.source is None:
        default = dataclasses.replace(options, label=options.label or DEMO_SPEC.label)
        request = data_request(default, config, options.key or DEMO_SPEC.key)
    else:
        kind = split_source_or_none(options.source)
        has_key = bool(options.key or config.get("key"))
        add_key = kind == "file" and not has_key
        request = data_request(options, config, ROW_KEY if add_key else None)
        if kind == "duckdb" and not has_key:
            problems.add("--key: required with a DuckDB --source (a unique row key column)")
    staged = _stage(options, work_dir, request, add_key, problems)
    if staged is None:
        return None
    try:
        checked = check_source(staged, request)
    except BaseException:
        staged.discard()
        raise
    problems.extend(checked.problems)
    if problems or checked.spec is None:
        staged.discard()
        return None
    description = options.source or staged.description
    declared = bool(request.classes)
    return LocalSource(staged.commit(), checked.spec, description, checked, declared)


def split_source_or_none(source: str) -> str | None:
    """``"duckdb"``, ``"file"`` or None (an unknown form, reported elsewhere)."""
    try:
        return split_source(source)[0]
    except PipelineInputError:
        return None


def class_mapping_line(spec: FeatureSpec, declared: bool) -> str:
    """``classes: 0=bad 1=good (inferred from the train split, sorted)``."""
    how = "as declared" if declared else "inferred from the train split, sorted"
    mapping = "  ".join(f"{i}={name!r}" for i, name in enumerate(spec.classes))
    return f"classes: {mapping}  ({how})"


def serving_name_lines(spec: FeatureSpec) -> list[str]:
    """``serving input: 'my feature' -> 'my_feature_ea938146'``, one per renamed feature.

    The SavedModel's signature takes these names
    (:mod:`vertex_imbalanced.training.serving_names`; stored as ``serving_inputs`` in
    ``model_metadata.json``); features not listed keep their column names.
    """
    from vertex_imbalanced.training.serving_names import serving_names

    return [
        f"serving input: {column!r} -> {served!r} (the SavedModel signature's argument name)"
        for column, served in serving_names(spec.features).items()
        if column != served
    ]


def input_lines(source: LocalSource, declared: bool) -> list[str]:
    """What run_local prints before the pipeline starts: roles, classes, skipped, warnings."""
    lines = [
        f"columns: {line}"
        for line in describe_roles(source.spec, source.check.types, source.check.id_like)
    ]
    lines.append(class_mapping_line(source.spec, declared))
    lines += serving_name_lines(source.spec)
    if source.check.skipped:
        lines.append(
            f"label policy skip: {source.check.skipped} row(s) with a NULL label or one outside "
            "the classes are left out"
        )
    lines += [f"warning: {line}" for line in source.check.warnings]
    return lines
