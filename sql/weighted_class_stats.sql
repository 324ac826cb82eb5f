-- Rows and summed weights per label value of a written (downsampled) training table.
--
-- Identifiers: table, label, weight.
SELECT
  CAST(t.{label} AS STRING) AS label_value,
  COUNT(*) AS row_count,
  SUM(t.{weight}) AS weight_sum
FROM {table} AS t
GROUP BY 1
