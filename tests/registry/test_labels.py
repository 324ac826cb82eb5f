"""registry/labels.py: Vertex label rules, checked for user labels and sanitised for derived ones."""

import warnings

import pytest

from fakes.vertex import _LABEL_KEY_RE as FAKE_KEY_RE
from fakes.vertex import _LABEL_VALUE_RE as FAKE_VALUE_RE
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.registry.labels import (
    MAX_LABELS,
    LabelSanitizedWarning,
    check_label_count,
    check_labels,
    is_label_key,
    is_label_value,
    sanitize_label_key,
    sanitize_label_value,
)


def test_valid_labels_pass_unchanged():
    labels = {"team": "ml", "env": "", "a-b_c9": "x" * 63, "k" + "y" * 62: "0-_"}
    assert check_labels(labels) == labels
    assert check_labels({f"k{i}": str(i) for i in range(MAX_LABELS)})  # exactly 64 is allowed


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("", "must not be empty"),
        ("Team", "must start with a lowercase letter"),
        ("1team", "must start with a lowercase letter"),
        ("_team", "must start with a lowercase letter"),
        ("éte", "must start with a lowercase letter"),
        ("team.name", "may hold only lowercase letters, digits, '_' and '-'"),
        ("teAm", "may hold only lowercase letters, digits, '_' and '-'"),
        ("k" * 64, "is 64 characters long; at most 63 are allowed"),
    ],
)
def test_bad_key_names_the_key_and_the_rule(key, rule):
    with pytest.raises(PipelineInputError) as caught:
        check_labels({"ok": "v", key: "v"}, what="--labels")
    assert str(caught.value) == f"--labels key {key!r} {rule} (Vertex label rules)"


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("ML", "may hold only lowercase letters, digits, '_' and '-'"),
        ("a b", "may hold only lowercase letters, digits, '_' and '-'"),
        ("v1.2", "may hold only lowercase letters, digits, '_' and '-'"),
        ("x" * 64, "is 64 characters long; at most 63 are allowed"),
    ],
)
def test_bad_value_names_the_label_and_the_rule(value, rule):
    with pytest.raises(PipelineInputError) as caught:
        check_labels({"team": value})
    assert str(caught.value) == f"label team={value!r}: the value {rule} (Vertex label rules)"


def test_too_many_labels():
    labels = {f"k{i}": "v" for i in range(MAX_LABELS + 1)}
    for check in (check_labels, check_label_count):
        with pytest.raises(PipelineInputError, match="at most 64 labels per resource; got 65"):
            check(labels)
    check_label_count(dict(list(labels.items())[:MAX_LABELS]))


def test_non_string_value_is_refused():
    with pytest.raises(PipelineInputError, match="must be a string, not int"):
        check_labels({"epochs": 3})


@pytest.mark.parametrize(
    "text",
    ["team", "", "a" * 63, "A", "a.b", "a" * 64, "Ünïcode", "-x", "1", "_", "x y", "a" * 200],
)
def test_our_rules_agree_with_the_fake_vertex_server(text):
    # The fake models the service independently; the two must never disagree.
    assert is_label_key(text) == bool(FAKE_KEY_RE.match(text))
    assert is_label_value(text) == bool(FAKE_VALUE_RE.match(text))


def test_sanitised_values_are_valid_distinct_and_warned():
    with pytest.warns(LabelSanitizedWarning, match="run id 'Run 1/Retry' violates"):
        first = sanitize_label_value("Run 1/Retry", what="run id")
    with pytest.warns(LabelSanitizedWarning):
        second = sanitize_label_value("run 1 retry")
    assert is_label_value(first) and is_label_value(second)
    assert first.startswith("run_1_retry-") and second.startswith("run_1_retry-")
    assert first != second  # the digest keeps distinct inputs apart
    long = sanitize_label_value("X" * 200, warn=False)
    assert len(long) == 63 and is_label_value(long)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sanitize_label_value("already-valid_1") == "already-valid_1"
        assert sanitize_label_value("Quiet Name", warn=False).startswith("quiet_name-")
        assert sanitize_label_key("fine_key") == "fine_key"


@pytest.mark.parametrize(
    ("key", "expected"),
    [("Team", "team"), ("1st", "k1st"), ("a.b", "a_b"), ("_x", "k_x"), ("K" * 70, "k" * 63)],
)
def test_sanitised_keys_are_valid(key, expected):
    with pytest.warns(LabelSanitizedWarning, match=f"label key {key!r} violates"):
        assert sanitize_label_key(key) == expected
    assert is_label_key(expected)
