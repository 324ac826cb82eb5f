"""Core logic of the imbalanced-classification pipeline (no KFP imports here)."""
