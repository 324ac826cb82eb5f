-- Rows per split and label value of the source table, before anything is written.
--
-- Uses the same bucket as split.sql. A NULL label is its own group (label_value NULL), so the
-- caller can report how many labels are missing. example_key names one row of each group for
-- error messages; null_keys counts the group's rows whose key is NULL (spread as split.sql says).
--
-- Identifiers: source, key, label.
-- Parameters: @train_end INT64, @validation_end INT64 (bucket boundaries, see split.sql).
SELECT
  CASE
    WHEN bucket < @train_end THEN 'train'
    WHEN bucket < @validation_end THEN 'validation'
    ELSE 'test'
  END AS split,
  label_value,
  COUNT(*) AS row_count,
  COUNTIF(key_value IS NULL) AS null_keys,
  MIN(key_value) AS example_key
FROM (
  SELECT
    ABS(MOD(FARM_FINGERPRINT(COALESCE(CAST(src.{key} AS STRING), CONCAT('null key:', TO_JSON_STRING(src)))), 10000)) AS bucket,
    CAST(src.{label} AS STRING) AS label_value,
    CAST(src.{key} AS STRING) AS key_value
  FROM {source} AS src
) AS buckets
GROUP BY 1, 2
