-- One row of the statistics store: appended by vertex_imbalanced.monitoring.store (BigQuery: a
-- query job with WRITE_APPEND; DuckDB: INSERT INTO ... SELECT).
--
-- Parameters: @series STRING, @run_id STRING, @statistics STRING (the statistics JSON).
SELECT
  @series AS series,
  @run_id AS run_id,
  CURRENT_TIMESTAMP() AS created_at,
  @statistics AS statistics
