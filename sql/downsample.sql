-- The training split, downsampled per class and weighted.
--
-- Train rows are the bucket range [@bucket_lo, @bucket_hi) of split.sql. Each class has a keep
-- rate and a weight, passed as three parallel arrays joined by offset. A row is kept when a
-- *second* hash of its key (salted with @keep_salt, so it is independent of the split bucket)
-- falls below keep_rate; kept rows carry the class weight in the weight column (FLOAT64).
-- Deterministic: the same key is always kept or always dropped. Rows whose label is not in
-- @class_names are dropped (prepare.py rejects such labels before running this).
--
-- Identifiers: source, key, label, weight.
-- Parameters: @bucket_lo INT64, @bucket_hi INT64, @class_names ARRAY<STRING>,
--   @keep_rates ARRAY<FLOAT64>, @class_weights ARRAY<FLOAT64>, @keep_salt STRING.
WITH rates AS (
  SELECT class_name, keep_rate, class_weight
  FROM UNNEST(@class_names) AS class_name WITH OFFSET AS i
  JOIN UNNEST(@keep_rates) AS keep_rate WITH OFFSET AS j ON i = j
  JOIN UNNEST(@class_weights) AS class_weight WITH OFFSET AS k ON i = k
)
SELECT
  src.*,
  CAST(rates.class_weight AS FLOAT64) AS {weight}
FROM {source} AS src
JOIN rates ON CAST(src.{label} AS STRING) = rates.class_name
WHERE
  ABS(MOD(FARM_FINGERPRINT(COALESCE(CAST(src.{key} AS STRING), CONCAT('null key:', TO_JSON_STRING(src)))), 10000)) >= @bucket_lo
  AND ABS(MOD(FARM_FINGERPRINT(COALESCE(CAST(src.{key} AS STRING), CONCAT('null key:', TO_JSON_STRING(src)))), 10000)) < @bucket_hi
  AND ABS(MOD(FARM_FINGERPRINT(CONCAT(@keep_salt, COALESCE(CAST(src.{key} AS STRING), CONCAT('null key:', TO_JSON_STRING(src))))), 1000000000))
    < rates.keep_rate * 1000000000
