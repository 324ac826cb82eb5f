-- Approximate quantiles, minimum and maximum of a numeric feature: the training bin edges.
--
-- Reads {source} as feature_histogram.sql does. Non-finite values (NaN, +-inf) are left out
-- (they fall into the missing / below / above bins of the histogram). APPROX_QUANTILES(x, n)
-- returns n + 1 approximate quantiles (BigQuery: documented error bound; DuckDB: a t-digest),
-- so inner edges can differ a little between engines; the exact minimum and maximum make the
-- outer edges exact, and the histogram over the chosen edges is then exact on both.
--
-- As written it covers one feature with 20 bins; statistics.py repeats the items per feature
-- (`value` renamed to that feature's column) and sets the number of bins.
--
-- Identifiers: source.
SELECT
  APPROX_QUANTILES(IF(IS_NAN(s.value) OR IS_INF(s.value), NULL, s.value), 20) AS quantiles,
  MIN(IF(IS_NAN(s.value) OR IS_INF(s.value), NULL, s.value)) AS minimum,
  MAX(IF(IS_NAN(s.value) OR IS_INF(s.value), NULL, s.value)) AS maximum
FROM {source} AS s
