-- The predictions' distribution: rows per predicted class and per probability vector rounded to
-- 3 decimals, with the exact probability sums.
--
-- From the result: predicted-class shares (sum n by class_id), mean predicted probabilities
-- (sum of prob_sum_c / rows, exact) and the EM prior estimate of
-- vertex_imbalanced.monitoring.prior_shift, which needs only the distinct rounded vectors and
-- their counts (rounding moves a posterior by at most 5e-4; a binary model has at most 1001
-- groups per class).
--
-- As written it covers classes 0 and 1; vertex_imbalanced.monitoring.predictions repeats the
-- `p_*` and `prob_sum_*` items once per class c with OFFSET(c).
--
-- Identifiers: table, class_id (INT64), probabilities (ARRAY<FLOAT64> in class-id order).
SELECT
  t.{class_id} AS class_id,
  ROUND(t.{probabilities}[OFFSET(0)], 3) AS p_0,
  ROUND(t.{probabilities}[OFFSET(1)], 3) AS p_1,
  COUNT(*) AS n,
  SUM(t.{probabilities}[OFFSET(0)]) AS prob_sum_0,
  SUM(t.{probabilities}[OFFSET(1)]) AS prob_sum_1
FROM {table} AS t
GROUP BY class_id, p_0, p_1
