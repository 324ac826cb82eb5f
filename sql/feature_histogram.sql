-- Histogram of a numeric feature over given bin edges, per window, in one scan.
--
-- Reads {source}: rows with a FLOAT64 column `value` (the feature, converted by
-- vertex_imbalanced.monitoring.statistics: NUMERIC/INT64/BOOL as numbers, DATE and TIMESTAMP as
-- days since 1970-01-01) and an INT64 `window_id` (0 when there are no time windows).
-- For each edge k it counts the rows with value < edges[k] (cumulative counts): bin counts are
-- differences of consecutive ones, and rows at or above the last edge are what remains of the
-- non-missing rows. NaN is counted as missing with NULL (NaN < edge is false on both engines).
-- Counting per edge keeps the query one pass of COUNTIFs, which DuckDB vectorises; a join
-- against a bins table or a bucket subquery per row was 4-20x slower.
--
-- As written it covers one feature and its first edge. statistics.py assembles the real query
-- from these items (the syntax tree, never text): `missing` and `below` once per feature, with
-- `value` renamed to that feature's column and @edges to @edges_<i>, and `below` once per
-- edge k with OFFSET(k).
--
-- Identifiers: source. Parameters: @edges ARRAY<FLOAT64> (finite, strictly increasing).
SELECT
  s.window_id AS window_id,
  COUNT(*) AS row_count,
  COUNTIF(s.value IS NULL OR IS_NAN(s.value)) AS missing,
  COUNTIF(s.value < @edges[OFFSET(0)]) AS below
FROM {source} AS s
GROUP BY s.window_id
