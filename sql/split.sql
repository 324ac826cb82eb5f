-- Rows of one split (train, validation or test) of the source table.
--
-- A row's bucket is ABS(MOD(FARM_FINGERPRINT(key as STRING), 10000)): deterministic, so a rerun
-- gives the same split. prepare.py turns the split ratios into bucket ranges
-- train [0, t), validation [t, v), test [v, 10000) and passes one range per query.
-- A row whose key is NULL hashes the JSON text of the whole row instead (TO_JSON_STRING), so
-- NULL-key rows spread over the splits in proportion, reruns put each in the same split, and
-- identical rows stay together (no duplicate leaks from train into test). That text is the
-- engine's own JSON: for FLOAT64/TIMESTAMP columns a NULL-key row may land in another split on
-- BigQuery than on DuckDB (rows with a key never do). prepare.py warns with the counts.
-- The key's text must be the same on BigQuery and DuckDB, so key columns are integers, STRING,
-- DATE or BOOL; FLOAT64, NUMERIC, TIMESTAMP, DATETIME, TIME and BYTES keys are refused before
-- any query (vertex_imbalanced.warehouse.engines.check_split_key).
--
-- Identifiers (validated, substituted by vertex_imbalanced.warehouse.engines.render): source, key.
-- Parameters: @bucket_lo INT64, @bucket_hi INT64.
SELECT src.*
FROM {source} AS src
WHERE
  ABS(MOD(FARM_FINGERPRINT(COALESCE(CAST(src.{key} AS STRING), CONCAT('null key:', TO_JSON_STRING(src)))), 10000)) >= @bucket_lo
  AND ABS(MOD(FARM_FINGERPRINT(COALESCE(CAST(src.{key} AS STRING), CONCAT('null key:', TO_JSON_STRING(src)))), 10000)) < @bucket_hi
