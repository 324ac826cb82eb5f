"""Serving input names: every column name maps to a valid SavedModel signature argument.

BigQuery accepts column names that a SavedModel signature cannot take as an argument name: TF
turns each input into a Python parameter of the signature function, so a name must be a Python
identifier made of ASCII letters, digits and underscores, start with a letter (TF renames
``_score`` and ``2x`` and then finds the original name twice) and not be a keyword (``from``,
``class``). The rule, applied to each feature column on its own (so the name of a column never
depends on the other columns):

* a name matching ``[A-Za-z][A-Za-z0-9_]*`` that is not a Python keyword is kept as it is;
* any other name becomes ``<base>_<8 hex digits of sha256(name as UTF-8)>``, where ``<base>`` is
  the name folded to ASCII (accents dropped: ``größe`` -> ``groe``), every run of other
  characters replaced by ``_``, underscores trimmed, prefixed with ``c_`` when it would start
  with a digit or be empty: ``my feature`` -> ``my_feature_<hash>``, ``_score`` ->
  ``score_<hash>``, ``from`` -> ``from_<hash>``.

The hash keeps distinct names apart (``my feature`` and ``my-feature`` differ in their hashes,
``my_feature`` is kept). :func:`serving_names` checks that the served names of a model are
distinct even ignoring case (BigQuery and DuckDB compare column names case-insensitively) and
refuses, naming both columns, the one-in-four-billion case where they are not.

The Keras model (``model.keras``) takes the original column names; the SavedModel's
``serving_default`` takes the served names; ``model_metadata.json`` stores the mapping under
``serving_inputs``.
"""

from __future__ import annotations

import hashlib
import keyword
import re
import unicodedata
from collections.abc import Iterable

from vertex_imbalanced.errors import PipelineInputError

_KEPT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_OTHER = re.compile(r"[^A-Za-z0-9]+")


def is_signature_name(name: str) -> bool:
    """True when ``name`` can be a SavedModel signature argument as it is."""
    return bool(_KEPT.fullmatch(name)) and not keyword.iskeyword(name)


def serving_name(column: str) -> str:
    """The signature argument name of one column (see the module docstring)."""
    if is_signature_name(column):
        return column
    folded = unicodedata.normalize("NFKD", column).encode("ascii", "ignore").decode("ascii")
    base = _OTHER.sub("_", folded).strip("_")
    if not base or not base[0].isalpha():
        base = f"c_{base}".rstrip("_")
    digest = hashlib.sha256(column.encode("utf-8")).hexdigest()[:8]
    return f"{base}_{digest}"


def serving_names(columns: Iterable[str]) -> dict[str, str]:
    """``{column: signature argument name}`` for the feature columns, in their order.

    Raises:
        PipelineInputError: two columns that are equal ignoring case, or (practically never)
            whose served names are, both named.
    """
    mapping: dict[str, str] = {}
    seen: dict[str, str] = {}
    for column in columns:
        if column.lower() in {c.lower() for c in mapping}:
            other = next(c for c in mapping if c.lower() == column.lower())
            raise PipelineInputError(
                f"feature columns {other!r} and {column!r} differ only in case; BigQuery and "
                "DuckDB treat them as one column: rename one"
            )
        served = serving_name(column)
        if served.lower() in seen:
            raise PipelineInputError(
                f"feature columns {seen[served.lower()]!r} and {column!r} both map to the "
                f"serving input name {served!r} (ignoring case): rename one of them"
            )
        seen[served.lower()] = column
        mapping[column] = served
    return mapping
