-- Value frequencies of a categorical feature, per window: the top values, the reference values,
-- everything else as one "other" row, and NULL.
--
-- Reads {source}: rows with a STRING column `value` (INT64 and BOOL features are cast to STRING
-- by vertex_imbalanced.monitoring.statistics) and an INT64 `window_id` (0 without windows).
-- Output rows (window_id, kind, value, n): kind 'value' for a value that is in @known or among
-- the @top_k most frequent other values of its window (ties broken by value), 'other' (value
-- NULL) for the rest together, 'null' (value NULL) for NULL. @known are the reference's
-- categories: counting each of them exactly makes the L-infinity distance exact; unseen values
-- are the top ones outside @known. BigQuery needs a non-empty typed array, so callers without a
-- reference pass [''] (the empty string is then always counted on its own; no count changes).
--
-- Identifiers: source. Parameters: @known ARRAY<STRING>, @top_k INT64.
WITH counts AS (
  SELECT s.window_id AS window_id, s.value AS value, COUNT(*) AS n
  FROM {source} AS s
  GROUP BY s.window_id, s.value
),
ranked AS (
  SELECT
    window_id,
    value,
    n,
    COALESCE(value IN UNNEST(@known), FALSE) AS is_known,
    ROW_NUMBER() OVER (
      PARTITION BY window_id, value IS NULL, COALESCE(value IN UNNEST(@known), FALSE)
      ORDER BY n DESC, value
    ) AS value_rank
  FROM counts
)
SELECT
  window_id,
  CASE
    WHEN value IS NULL THEN 'null'
    WHEN is_known OR value_rank <= @top_k THEN 'value'
    ELSE 'other'
  END AS kind,
  CASE WHEN value IS NOT NULL AND (is_known OR value_rank <= @top_k) THEN value END AS value,
  SUM(n) AS n
FROM ranked
GROUP BY 1, 2, 3
