"""Vertex AI label rules: one home for checking and sanitising label keys and values.

Google Cloud's rules for resource labels (pipeline jobs, models, ...): at most 64 labels; a key is
1-63 characters, starts with a lowercase letter, and holds lowercase letters, digits, ``_`` and
``-``; a value is 0-63 characters of the same set. Google also accepts international lowercase
letters; we accept ASCII only (stricter, never looser).

Two ways to use them:

- :func:`check_labels` for labels a user typed (``submit.py --labels``): a label that breaks a
  rule is an error naming the label and the rule.
- :func:`sanitize_label_key` / :func:`sanitize_label_value` for labels we derive from free text
  (a model display name, a run id, a source table): the text is changed to fit, with a
  :class:`LabelSanitizedWarning`, and distinct inputs stay distinct.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections.abc import Mapping

from vertex_imbalanced.errors import LabelSanitizedWarning, PipelineInputError

_LOG = logging.getLogger(__name__)

MAX_LABELS = 64
MAX_LABEL_LENGTH = 63
_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
_ALLOWED = "lowercase letters, digits, '_' and '-'"
_DIGEST_CHARS = 8

__all__ = [
    "MAX_LABELS",
    "MAX_LABEL_LENGTH",
    "LabelSanitizedWarning",
    "check_label_count",
    "check_labels",
    "is_label_key",
    "is_label_value",
    "label_key_problem",
    "label_value_problem",
    "sanitize_label_key",
    "sanitize_label_value",
]


def is_label_key(key: str) -> bool:
    """Whether ``key`` is a valid Vertex label key as it stands."""
    return isinstance(key, str) and bool(_KEY_RE.match(key))


def is_label_value(value: str) -> bool:
    """Whether ``value`` is a valid Vertex label value as it stands (empty is valid)."""
    return isinstance(value, str) and bool(_VALUE_RE.match(value))


def label_key_problem(key: str) -> str | None:
    """Which key rule ``key`` breaks, in words; None when it is valid."""
    if not isinstance(key, str):
        return f"must be a string, not {type(key).__name__}"
    if not key:
        return "must not be empty"
    if len(key) > MAX_LABEL_LENGTH:
        return f"is {len(key)} characters long; at most {MAX_LABEL_LENGTH} are allowed"
    if not key[0].islower() or not key[0].isascii():
        return "must start with a lowercase letter"
    if not _KEY_RE.match(key):
        return f"may hold only {_ALLOWED}"
    return None


def label_value_problem(value: str) -> str | None:
    """Which value rule ``value`` breaks, in words; None when it is valid."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if len(value) > MAX_LABEL_LENGTH:
        return f"is {len(value)} characters long; at most {MAX_LABEL_LENGTH} are allowed"
    if not _VALUE_RE.match(value):
        return f"may hold only {_ALLOWED}"
    return None


def check_labels(labels: Mapping[str, str], *, what: str = "label") -> dict[str, str]:
    """Check user-given labels against Vertex's rules, changing nothing.

    Args:
        labels: ``{key: value}`` as the user gave them.
        what: how to name one label in errors (e.g. ``"--labels"``).

    Returns:
        A copy of ``labels``.

    Raises:
        PipelineInputError: more than 64 labels, or a key or value that breaks a rule; the
            message names the label and the rule.
    """
    check_label_count(labels)
    for key, value in labels.items():
        problem = label_key_problem(key)
        if problem:
            raise PipelineInputError(f"{what} key {key!r} {problem} (Vertex label rules)")
        problem = label_value_problem(value)
        if problem:
            raise PipelineInputError(
                f"{what} {key}={value!r}: the value {problem} (Vertex label rules)"
            )
    return dict(labels)


def check_label_count(labels: Mapping[str, str]) -> None:
    """Raise :class:`PipelineInputError` if ``labels`` holds more than 64 labels."""
    if len(labels) > MAX_LABELS:
        raise PipelineInputError(
            f"Vertex allows at most {MAX_LABELS} labels per resource; got {len(labels)}"
        )


def sanitize_label_value(text: str, *, what: str = "label value", warn: bool = True) -> str:
    """Make ``text`` a valid Vertex label value, warning (or with ``warn=False`` logging) on change.

    A value that needs changes is lowercased, other characters become ``_``, and it is cut to 54
    characters plus ``-`` and 8 hex digits of its SHA-256, so distinct inputs stay distinct.

    Args:
        text: any text (non-strings are converted with ``str``).
        what: how to name the value in the warning.
        warn: emit a :class:`LabelSanitizedWarning` (and a warning log line) when ``text`` is
            changed; with False only an info log line.

    Returns:
        ``text`` unchanged when valid, else the sanitised form (at most 63 characters).
    """
    text = str(text)
    if _VALUE_RE.match(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_CHARS]
    keep = MAX_LABEL_LENGTH - _DIGEST_CHARS - 1
    cleaned = re.sub(r"[^a-z0-9_-]", "_", text.lower())[:keep] + "-" + digest
    message = f"{what} {text!r} violates Vertex label rules; using {cleaned!r}"
    if warn:
        _LOG.warning(message)
        warnings.warn(message, LabelSanitizedWarning, stacklevel=3)
    else:
        _LOG.info(message)
    return cleaned


def sanitize_label_key(key: str) -> str:
    """Make ``key`` a valid Vertex label key, warning on change.

    A key that needs changes is lowercased, other characters become ``_``, ``k`` is put in front
    when it does not start with a letter, and it is cut to 63 characters.

    Args:
        key: any text (non-strings are converted with ``str``).

    Returns:
        ``key`` unchanged when valid, else the sanitised form.
    """
    key = str(key)
    if _KEY_RE.match(key):
        return key
    cleaned = re.sub(r"[^a-z0-9_-]", "_", key.lower())
    if not cleaned[:1].isalpha():
        cleaned = "k" + cleaned
    cleaned = cleaned[:MAX_LABEL_LENGTH]
    message = f"label key {key!r} violates Vertex label rules; using {cleaned!r}"
    _LOG.warning(message)
    warnings.warn(message, LabelSanitizedWarning, stacklevel=3)
    return cleaned
