"""Evaluation on the untouched test split: metrics, operating point, baselines, report, gate."""
