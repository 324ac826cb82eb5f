-- The predictions with prior-adjusted probabilities as one more ARRAY column (Saerens, Latinne &
-- Decaestecker, 2002): adjusted[c] = p[c] * w_c / sum_j p[j] * w_j, with w_c = serving prior /
-- training prior of class c (query parameters; the serving prior is the run's EM estimate),
-- and 1 / C (@uniform) for a row whose weighted sum is 0. Every other column, the served
-- decision `class_id` included, is kept as it is.
--
-- As written it covers classes 0 and 1; vertex_imbalanced.batch_prediction.prior_adjustment
-- repeats the array item and the sum's term once per class c with OFFSET(c) and @w_c.
--
-- Identifiers: table (the predictions), probabilities (ARRAY<FLOAT64> in class-id order),
-- adjusted (the new column).
SELECT
  s.* EXCEPT (_weighted_sum),
  [
    IF(s._weighted_sum > 0, s.{probabilities}[OFFSET(0)] * @w_0 / s._weighted_sum, @uniform),
    IF(s._weighted_sum > 0, s.{probabilities}[OFFSET(1)] * @w_1 / s._weighted_sum, @uniform)
  ] AS {adjusted}
FROM (
  SELECT
    t.*,
    t.{probabilities}[OFFSET(0)] * @w_0 + t.{probabilities}[OFFSET(1)] * @w_1 AS _weighted_sum
  FROM {table} AS t
) AS s
