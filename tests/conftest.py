"""Shared test setup: quiet TensorFlow, one CPU thread pool small enough for 2 cores."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
