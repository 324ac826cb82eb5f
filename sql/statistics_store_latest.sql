-- The latest statistics of a series stored by another run (the drift baseline).
--
-- Identifiers: store (columns series, run_id, created_at, statistics).
-- Parameters: @series STRING, @run_id STRING (the current run: a rerun does not compare with
-- itself).
SELECT s.run_id AS run_id, s.statistics AS statistics
FROM {store} AS s
WHERE s.series = @series AND s.run_id <> @run_id
ORDER BY s.created_at DESC, s.run_id DESC
LIMIT 1
