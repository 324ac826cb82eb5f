-- Rows of one split (validation or test) whose label is one of the classes.
--
-- The same buckets as split.sql (ABS(MOD(FARM_FINGERPRINT(key as STRING), 10000)) in
-- [@bucket_lo, @bucket_hi)); rows with a NULL label or a label outside @class_names are left
-- out. prepare.py counts those rows first and stops unless the label policy is "skip", so under
-- the default policy this returns exactly the rows split.sql returns.
--
-- Identifiers: source, key, label.
-- Parameters: @bucket_lo INT64, @bucket_hi INT64, @class_names ARRAY<STRING>.
SELECT src.*
FROM {source} AS src
WHERE
  ABS(MOD(FARM_FINGERPRINT(COALESCE(CAST(src.{key} AS STRING), CONCAT('null key:', TO_JSON_STRING(src)))), 10000)) >= @bucket_lo
  AND ABS(MOD(FARM_FINGERPRINT(COALESCE(CAST(src.{key} AS STRING), CONCAT('null key:', TO_JSON_STRING(src)))), 10000)) < @bucket_hi
  AND CAST(src.{label} AS STRING) IN UNNEST(@class_names)
