"""The warehouse side: SQL rendering and engines, split, rebalancing, the prepare step."""
