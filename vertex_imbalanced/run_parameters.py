"""Pipeline run parameters from the command line and a config file, checked against a template.

Pure logic (no KFP, no Vertex SDK) behind ``submit.py``:

- :func:`parse_pairs` reads ``NAME=VALUE`` items (``--param``, ``--labels``);
- :func:`read_run_config` reads a ``--config`` YAML file (flags, ``parameters:``, ``labels:``),
  and :func:`merge_flags` lets the command line win over it;
- :func:`resolve_parameters` checks each value's name and type against the compiled template's
  parameters and converts it (:func:`convert_parameter`); a value ``@FILE`` is read from FILE;
- :func:`value_problems` checks what the values mean, offline (URI forms, feature-config keys,
  split ratios, name patterns, the CMEK key), so a dry run finds what Vertex would refuse.

Every check collects all problems of one pass (:class:`~vertex_imbalanced.options_check.Problems`)
and raises them together (:class:`~vertex_imbalanced.errors.InputProblemsError`, one line each,
each naming the parameter).

The template's parameter types are KFP's ``parameterType`` names: ``STRING``,
``NUMBER_INTEGER``, ``NUMBER_DOUBLE``, ``BOOLEAN``, ``LIST`` and ``STRUCT``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.options_check import Problems, split_ratios

TYPE_WORDS = {
    "STRING": "a string",
    "NUMBER_INTEGER": "an integer",
    "NUMBER_DOUBLE": "a number",
    "BOOLEAN": "true or false",
    "LIST": "a JSON list",
    "STRUCT": "a JSON object",
}
"""How each template parameter type is named in error messages."""

_INTEGER_RE = re.compile(r"[+-]?\d+")
KMS_KEY_RE = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/keyRings/(?P<ring>[^/]+)/cryptoKeys/(?P<key>[^/]+)$"
)
"""A Cloud KMS key's resource name (what Vertex AI and BigQuery take as a CMEK key)."""
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML parse error as one line: the problem and where (``... at line 2, column 1``)."""
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(err).split())


def read_value_file(name: str, value: Any, kind: str) -> Any:
    """Replace a value ``@FILE`` by the file's text (parsed as YAML for ``LIST``/``STRUCT``).

    Args:
        name: parameter name (for errors).
        value: the given value; anything that is not a string starting with ``@`` is returned
            unchanged.
        kind: the template's parameter type.

    Returns:
        The file's text (``STRING`` and the scalar types), or its YAML content (``LIST``,
        ``STRUCT``), or ``value`` unchanged.

    Raises:
        PipelineInputError: the file cannot be read, or its YAML does not parse.
    """
    if not (isinstance(value, str) and value.startswith("@")):
        return value
    path = Path(value[1:])
    try:
        text = path.read_text()
    except OSError as err:
        raise PipelineInputError(
            f"parameter {name!r}: cannot read {str(path)!r} ({err.strerror or err})"
        ) from err
    if kind not in ("STRUCT", "LIST"):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PipelineInputError(
            f"parameter {name!r}: {str(path)!r} is not valid YAML/JSON: {yaml_problem(err)}"
        ) from err


def convert_parameter(name: str, kind: str, value: Any) -> Any:
    """Convert a command-line string (or config value) to the template's parameter type.

    Args:
        name: parameter name (for errors).
        kind: the template's ``parameterType``.
        value: a string from the command line, or a typed value from a config file; ``@FILE``
            reads the value from FILE (:func:`read_value_file`).

    Returns:
        ``str`` for ``STRING`` (a mapping or list becomes its JSON text), ``bool``, ``int``,
        ``float`` (finite), ``list`` or ``dict``.

    Raises:
        PipelineInputError: the value cannot be read as that type (the message names the
            parameter, the expected type and the value), a ``NUMBER_DOUBLE`` is NaN or
            infinite, or the type is unknown.
    """
    value = read_value_file(name, value, kind)
    bad = PipelineInputError(
        f"parameter {name!r} expects {TYPE_WORDS.get(kind, kind)} ({kind}), got {value!r}"
    )
    if kind == "STRING":
        return json.dumps(value) if isinstance(value, Mapping | list) else str(value)
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise bad
    if isinstance(value, bool):  # bool is an int subclass: never a number here
        raise bad
    if kind == "NUMBER_INTEGER":
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _INTEGER_RE.fullmatch(value.strip()):
            return int(value)
        raise bad
    if kind == "NUMBER_DOUBLE":
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad from None
        if not math.isfinite(number):
            # float() reads "nan" and "inf"; Vertex would fail on them after the run started.
            raise PipelineInputError(f"parameter {name!r} must be a finite number, got {value!r}")
        return number
    if kind in ("LIST", "STRUCT"):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise bad from None
        if not isinstance(value, list if kind == "LIST" else dict):
            raise bad
        return value
    raise bad


def template_parameters(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The pipeline's input parameters in a compiled template.

    Args:
        template: the compiled pipeline spec (the YAML as a dict).

    Returns:
        ``{name: {"parameterType": ..., "defaultValue"?: ..., "isOptional"?: ...}}``.
    """
    return dict(template.get("root", {}).get("inputDefinitions", {}).get("parameters", {}))


def resolve_parameters(
    declared: Mapping[str, Mapping[str, Any]],
    given: Mapping[str, Any],
    derived: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check names and types of ``given`` against the template's parameters; fill ``derived``.

    Args:
        declared: the template's parameters (:func:`template_parameters`).
        given: values from ``--config`` and ``--param`` (strings or typed values).
        derived: values for parameters the user did not give (e.g. ``registry_uri`` from the
            project); names the template does not declare are ignored.

    Returns:
        The parameter values to send, converted to the template's types.

    Raises:
        InputProblemsError: every unknown name, wrong type and missing required parameter,
            one line each.
    """
    problems = Problems()
    values = convert_parameters(declared, given, derived, problems)
    problems.raise_if_any()
    return values


def convert_parameters(
    declared: Mapping[str, Mapping[str, Any]],
    given: Mapping[str, Any],
    derived: Mapping[str, Any] | None,
    problems: Problems,
) -> dict[str, Any]:
    """:func:`resolve_parameters` that adds its problems to ``problems`` instead of raising.

    Returns:
        The values that converted (a value that did not is left out, its problem recorded).
    """
    unknown = sorted(set(given) - set(declared))
    if unknown:
        problems.add(
            f"unknown pipeline parameter(s) {unknown}; the pipeline takes: "
            f"{', '.join(sorted(declared))}"
        )
    values: dict[str, Any] = {}
    for name, value in [*given.items(), *(derived or {}).items()]:
        if name in declared and name not in values:
            kind = declared[name]["parameterType"]
            converted = problems.attempt(
                f"parameter {name!r}", lambda n=name, k=kind, v=value: convert_parameter(n, k, v)
            )
            if converted is not None:
                values[name] = converted
    missing = sorted(
        name
        for name, spec in declared.items()
        if name not in values
        and name not in given
        and "defaultValue" not in spec
        and not spec.get("isOptional")
    )
    if missing:
        problems.add(f"missing required pipeline parameter(s) {missing}: pass --param NAME=VALUE")
    return values


def effective_values(
    declared: Mapping[str, Mapping[str, Any]], values: Mapping[str, Any]
) -> dict[str, Any]:
    """The value each parameter will have: the given one, else the template's default."""
    out = {name: spec["defaultValue"] for name, spec in declared.items() if "defaultValue" in spec}
    out.update(values)
    return out


def kms_key_problem(option: str, key: str, region: str | None = None) -> str | None:
    """A CMEK key that Vertex AI would refuse: not a key's resource name, or another region.

    Args:
        option: how the key was given (``--kms-key``, ``parameter 'kms_key'``).
        key: ``projects/P/locations/L/keyRings/R/cryptoKeys/K`` ('' = none: fine).
        region: the Vertex AI region of the job; Vertex takes only keys of its own region.

    Returns:
        The problem line, or None.
    """
    if not key:
        return None
    match = KMS_KEY_RE.match(key)
    if not match:
        return (
            f"{option}: {key!r} is not a Cloud KMS key: use "
            "projects/P/locations/L/keyRings/R/cryptoKeys/K"
        )
    if region and match["location"] != region:
        return (
            f"{option}: the key is in location {match['location']!r} but the job runs in "
            f"{region!r}; Vertex AI takes only keys of the job's region"
        )
    return None


def _source_uri_problem(name: str, uri: Any) -> str | None:
    from vertex_imbalanced.warehouse.engines import source_table

    if not isinstance(uri, str) or not uri.startswith("bq://"):
        return (
            f"parameter {name!r}: {uri!r} is not a BigQuery table: use "
            "bq://PROJECT.DATASET.TABLE (Vertex AI runs read BigQuery)"
        )
    try:
        source_table(uri)
    except PipelineInputError as err:
        return f"parameter {name!r}: {err}"
    return None


def _registry_problem(name: str, uri: Any) -> str | None:
    if isinstance(uri, str) and re.fullmatch(
        r"vertex://[a-z][a-z0-9-]{4,28}[a-z0-9]/[a-z0-9-]+", uri
    ):
        return None
    if isinstance(uri, str) and re.fullmatch(
        r"local:///gcs/[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?", uri
    ):
        return None
    return (
        f"parameter {name!r}: {uri!r} is not a registry for Vertex AI runs: use "
        "vertex://PROJECT/REGION (or local:///gcs/BUCKET/PATH, a local registry on Cloud Storage)"
    )


def value_problems(values: Mapping[str, Any], *, region: str | None = None) -> list[str]:
    """What the pipeline's parameter values mean, checked offline: one line per problem.

    Only parameters present in ``values`` are checked (pass :func:`effective_values`, so
    defaults count too), each by the rule its step applies when it runs:

    - ``source_uri``: ``bq://project.dataset.table`` (Vertex runs read BigQuery);
    - ``feature_config`` / ``hyperparameters``: the same parsers the steps use (unknown keys
      such as ``lable`` are named); ``imbalance_*``: ``ImbalanceConfig``'s rules;
    - ``train_ratio`` + ``validation_ratio`` + ``test_ratio``: positive, summing to 1 (1e-9);
    - ``tolerance`` >= 0, ``gate_baseline_min_tolerance`` >= 0, ``baseline_max_rows`` > 0;
    - ``model_display_name``: a Vertex model display name ('' = derived per run);
    - ``model_labels``: a JSON object obeying Vertex's label rules;
    - ``registry_uri``: ``vertex://PROJECT/REGION`` or ``local:///gcs/...``;
    - ``output_dataset``: ``[project.]dataset``; ``kms_key``: a key of ``region``.

    Args:
        values: parameter values, converted to their types.
        region: the Vertex AI region (for the key's location).

    Returns:
        The problem lines (empty: nothing found), each starting with ``parameter 'NAME'``.
    """
    from vertex_imbalanced.config import FeatureSpec, Hyperparameters, ImbalanceConfig
    from vertex_imbalanced.registry.labels import check_labels
    from vertex_imbalanced.registry.vertex import validate_display_name
    from vertex_imbalanced.warehouse.identifiers import TableRef

    problems = Problems()

    def attempt(name: str, check: Any) -> None:
        if name in values:
            problems.attempt(f"parameter {name!r}", lambda: check(values[name]))

    if "source_uri" in values:
        problems.add(_source_uri_problem("source_uri", values["source_uri"]))
    attempt("feature_config", lambda v: FeatureSpec.from_json(v) if v else None)
    attempt("hyperparameters", lambda v: Hyperparameters.from_dict(json.loads(v or "{}")))
    if {"imbalance_mode", "imbalance_max_ratio", "imbalance_target_share"} <= set(values):
        problems.attempt(
            "parameter 'imbalance_*'",
            lambda: ImbalanceConfig(
                mode=values["imbalance_mode"],
                max_ratio=values["imbalance_max_ratio"] or None,
                target_share=values["imbalance_target_share"] or None,
            ),
        )
    ratio_names = ("train_ratio", "validation_ratio", "test_ratio")
    if all(name in values for name in ratio_names):
        problems.add(
            split_ratios("parameters train_ratio, validation_ratio, test_ratio",
                         [values[name] for name in ratio_names])
        )  # fmt: skip
    for name in ("tolerance", "gate_baseline_min_tolerance"):
        if name in values and values[name] < 0:
            problems.add(f"parameter {name!r}: {values[name]} must be >= 0")
    if "baseline_max_rows" in values and values["baseline_max_rows"] < 1:
        problems.add(f"parameter 'baseline_max_rows': {values['baseline_max_rows']} must be >= 1")
    attempt("model_display_name", lambda v: validate_display_name(v) if v else None)
    attempt("model_labels", lambda v: _labels(check_labels, v))
    if "registry_uri" in values:
        problems.add(_registry_problem("registry_uri", values["registry_uri"]))
    attempt("output_dataset", lambda v: _dataset(TableRef, v) if v else None)
    if "kms_key" in values:
        problems.add(kms_key_problem("parameter 'kms_key'", values["kms_key"], region))
    return problems.lines


def _labels(check_labels: Any, text: str) -> None:
    try:
        labels = json.loads(text or "{}")
    except json.JSONDecodeError as err:
        raise PipelineInputError(f"not JSON: {err}") from err
    if not isinstance(labels, dict):
        raise PipelineInputError(f"must be a JSON object, got {text!r}")
    check_labels({str(k): str(v) for k, v in labels.items()}, what="model_labels")


def _dataset(table_ref: Any, text: str) -> None:
    if text.count(".") > 1:
        raise PipelineInputError(f"{text!r} must be [project.]dataset")
    table_ref.parse(f"{text}.t")


def parse_pairs(items: Iterable[str], what: str) -> dict[str, str]:
    """Parse ``NAME=VALUE`` items; a later item wins over an earlier one with the same name.

    Args:
        items: the items as typed (``VALUE`` may hold ``=``; it is kept as is).
        what: the flag, for errors (e.g. ``"--param"``).

    Returns:
        ``{NAME: VALUE}`` with ``NAME`` stripped of surrounding spaces.

    Raises:
        PipelineInputError: an item without ``=`` or with an empty name.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PipelineInputError(f"{what} {item!r} must look like NAME=VALUE")
        out[key.strip()] = value
    return out


def split_commas(items: Iterable[str]) -> list[str]:
    """Split each item at commas (``--labels a=1,b=2 --labels c=3``), dropping empty parts."""
    return [part for item in items for part in item.split(",") if part]


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What a ``--config`` YAML file holds.

    Attributes:
        flags: settings named like the command line's flags (``pipeline_root``, ...).
        parameters: pipeline parameter values (typed as YAML gives them).
        labels: job labels, keys and values as strings.
    """

    flags: dict[str, Any] = dataclasses.field(default_factory=dict)
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


def read_run_config(path: str | Path, flag_names: Sequence[str]) -> RunConfig:
    """Read a ``--config`` YAML file: flags, ``parameters:`` and ``labels:`` mappings.

    Args:
        path: the YAML file.
        flag_names: the flags a config file may set.

    Returns:
        The file's content, split into flags, parameters and labels.

    Raises:
        PipelineInputError: the file cannot be read or parsed, is not a mapping, has an
            unknown key, or its ``parameters``/``labels`` are not mappings.
    """
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as err:
        raise PipelineInputError(f"cannot read --config {str(path)!r}: {err}") from err
    except yaml.YAMLError as err:
        raise PipelineInputError(
            f"--config {str(path)!r} is not valid YAML: {yaml_problem(err)}"
        ) from err
    if not isinstance(data, dict):
        raise PipelineInputError(f"--config {str(path)!r} must hold a YAML mapping")
    known = {*flag_names, "parameters", "labels"}
    unknown = set(data) - known
    if unknown:
        raise PipelineInputError(
            f"unknown key(s) {sorted(unknown)} in {path}; known: {', '.join(sorted(known))}"
        )
    sections = {}
    for section in ("parameters", "labels"):
        value = data.get(section) or {}
        if not isinstance(value, dict):
            raise PipelineInputError(f"{section!r} in {path} must be a mapping")
        sections[section] = value
    return RunConfig(
        flags={name: data[name] for name in flag_names if name in data},
        parameters=dict(sections["parameters"]),
        labels={str(k): str(v) for k, v in sections["labels"].items()},
    )


def merge_flags(
    given: Mapping[str, Any], config: Mapping[str, Any], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Flags from the command line, filled from a config file where the user gave none.

    Args:
        given: the parsed command line (``{flag: value}``).
        config: flags from the config file (:attr:`RunConfig.flags`).
        defaults: each flag's command-line default; a flag still at its default (or None)
            counts as not given.

    Returns:
        ``given`` with the config's value for each flag the user left at its default.
    """
    merged = dict(given)
    for name, value in config.items():
        current = merged.get(name)
        if current is None or current == defaults.get(name):
            merged[name] = value
    return merged
