"""Batch prediction: resolve a registered model, score a table with Beam RunInference, publish.

Modules: :mod:`.resolve` (registry + alias/version -> model directory), :mod:`.scoring` (one
Arrow record batch -> one batch of output rows, the unit the Beam model handler and the
benchmark's direct loop both call), :mod:`.output` (output schema and atomic publishing to
DuckDB / BigQuery), :mod:`.dataflow` (Dataflow pipeline options), :mod:`.beam_pipeline` (the
Beam pipeline; imports Apache Beam) and :mod:`.run` (the whole scoring step).
"""
