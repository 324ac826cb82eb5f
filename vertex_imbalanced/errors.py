"""Exceptions that name the table, column or value at fault."""


class PipelineInputError(ValueError):
    """Bad input from the user: a table, column, value or setting that cannot be used."""


class SchemaError(PipelineInputError):
    """A table's schema does not fit the request (missing column, unsupported type)."""


class LabelError(PipelineInputError):
    """Label values that are NULL, outside the declared classes, or not integers."""


class SourceError(RuntimeError):
    """A data source failed in a way retries could not fix (names stream and offset)."""
