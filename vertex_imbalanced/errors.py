"""Exceptions that name the table, column or value at fault."""


class PipelineInputError(ValueError):
    """Bad input from the user: a table, column, value or setting that cannot be used."""


class SchemaError(PipelineInputError):
    """A table's schema does not fit the request (missing column, unsupported type)."""


class LabelError(PipelineInputError):
    """Label values that are NULL, outside the declared classes, or not integers."""


class SourceError(RuntimeError):
    """A data source failed in a way retries could not fix (names stream and offset)."""


class EvaluationError(RuntimeError):
    """The model produced unusable predictions (NaN / infinite / wrong shape); names the batch."""


class VertexSchemaError(PipelineInputError):
    """A document does not fit Vertex AI's ModelEvaluation classification schema (names the field)."""


class RegistryError(RuntimeError):
    """The registry service failed (server errors after retries, or a refused request)."""


class UndefinedMetricWarning(UserWarning):
    """A metric was 0/0 and set to 0 (like scikit-learn's ``zero_division=0``)."""


class PipelineRunError(RuntimeError):
    """A pipeline run failed or left inconsistent outputs; names the task and its error."""


class PipelineSpecError(PipelineInputError):
    """A compiled pipeline YAML that cannot be read, is not a PipelineSpec, or the SDK refuses."""


class MonitoringAlertError(RuntimeError):
    """Skew or drift above its threshold while the run was asked to fail on alerts (names them)."""


class LabelSanitizedWarning(UserWarning):
    """A Vertex label key or value was changed to satisfy Vertex's label rules."""


class InputProblemsError(PipelineInputError):
    """Every problem of a run's input and options, found in one pass (``.problems``: the lines)."""

    def __init__(self, problems: list[str] | tuple[str, ...]) -> None:
        """Keep the lines; the message lists them, one per line."""
        self.problems = tuple(problems)
        count = f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        super().__init__(f"{count} found before anything ran:\n  " + "\n  ".join(self.problems))


class OutputBusyError(PipelineInputError):
    """An output directory another run is using (its lock file is held)."""
