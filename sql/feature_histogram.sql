-- Histogram of a numeric feature over given bin edges, per window: rows per bucket.
--
-- Reads {source}: rows with a FLOAT64 column `value` (the feature, converted by
-- vertex_imbalanced.monitoring.statistics: NUMERIC/INT64/BOOL as numbers, DATE and TIMESTAMP as
-- days since 1970-01-01) and an INT64 `window_id` (0 when there are no time windows).
-- bucket -1 is NULL or NaN; otherwise bucket b counts the rows with exactly b edges <= value:
-- 0 is below the first edge, m + 1 at or above the last of m + 1 edges (+inf lands there,
-- -inf in 0).
--
-- As written it covers one feature and one edge. statistics.py builds the real query from it
-- (the syntax tree, never text): the `WHEN s.value < @edge THEN 0 ELSE 1` part becomes a binary
-- search over that feature's edges (each edge a scalar parameter @edge_<i>_<k>), so a row costs
-- about log2(edges) comparisons; the block is repeated per feature with `value` renamed to the
-- feature's column and a literal feature index, joined by UNION ALL. (One COUNTIF per edge was
-- 1.1-2.5x slower on DuckDB; an ARRAY parameter indexed per row, 2x slower still.)
--
-- Identifiers: source. Parameters: @edge FLOAT64.
SELECT
  0 AS feature,
  s.window_id AS window_id,
  CASE
    WHEN s.value IS NULL OR IS_NAN(s.value) THEN -1
    WHEN s.value < @edge THEN 0
    ELSE 1
  END AS bucket,
  COUNT(*) AS n
FROM {source} AS s
GROUP BY feature, window_id, bucket
