-- How unique the key column is, read before anything is written.
--
-- row_count: rows of the table; distinct_keys: distinct non-NULL keys; null_keys: rows whose
-- key is NULL; shared_key_rows: rows whose key is also another row's; example_key /
-- example_rows: the most repeated key (smallest text among ties) and its rows (NULL when every
-- key is unique). Keys are compared as text, as split.sql hashes them.
--
-- Identifiers: source, key.
-- Parameters: none.
WITH keys AS (
  SELECT CAST(src.{key} AS STRING) AS key_value, COUNT(*) AS n
  FROM {source} AS src
  GROUP BY 1
),
top AS (
  SELECT key_value, n
  FROM keys
  WHERE key_value IS NOT NULL AND n > 1
  ORDER BY n DESC, key_value
  LIMIT 1
)
SELECT
  COALESCE(SUM(n), 0) AS row_count,
  COUNTIF(key_value IS NOT NULL) AS distinct_keys,
  COALESCE(SUM(IF(key_value IS NULL, n, 0)), 0) AS null_keys,
  COALESCE(SUM(IF(key_value IS NOT NULL AND n > 1, n, 0)), 0) AS shared_key_rows,
  (SELECT key_value FROM top) AS example_key,
  (SELECT n FROM top) AS example_rows
FROM keys
