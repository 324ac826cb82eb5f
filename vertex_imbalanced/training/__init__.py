"""Training: feature statistics, the Keras model, budget, strategy, callbacks, export."""
