"""Skew and drift monitoring of scored tables: statistics in SQL, distances, prior shift, report."""
