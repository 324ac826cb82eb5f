"""KFP side: the pipeline definitions and what compiles and submits them.

- ``training_pipeline``: prepare -> train -> evaluate -> champion -> gate -> register.
- ``batch_prediction_pipeline``: resolve model -> batch predict.
- ``vertex_training``: the train step as a Vertex AI custom job (worker pools, GPU image,
  Reduction Server).
- ``compilation``: every pipeline to ``build/<name>.yaml``, validated offline (``compile.py``).
- ``submission``: submit or schedule a compiled pipeline on Vertex AI (``submit.py``).
- ``local_run``: run the training pipeline with kfp.local and DuckDB (``run_local.py``).

Core logic lives in ``vertex_imbalanced`` (no KFP import); modules here import KFP or the
Vertex AI SDK.
"""
