"""Imbalanced classification on Vertex AI and on a laptop: the core logic (never imports KFP).

The subpackages follow the data, box by box as in the README's diagram::

    warehouse/         BigQuery table (or DuckDB) --sql/--> split + downsample + weights
      identifiers        SQL identifiers and table references (validated; values are parameters)
      engines            sql/ rendering; one runner per engine (DuckDB, BigQuery)
      fingerprint        BigQuery's FARM_FINGERPRINT for DuckDB
      rebalance          keep rates and weights from class counts
      prepare            the prepare step: checks, split, class stats, downsampled train table
      local_import       CSV / Parquet / DuckDB files into a run's work database
      demo_data          the deterministic demo table
          |
    reading/           Arrow record batches -> tf.data (the narrow waist)
      sources/           Storage Read v1 (default), DuckDB, in-memory Arrow, tensorflow-io (legacy)
      schema             Arrow types -> feature roles; schema checks before any read
      record_packing     record batch -> packed tensors (raw feature feed)
      training_encoding  record batches -> encoded chunks (the training feed)
      datasets           make_dataset / make_encoded_dataset (FeedOptions)
          |
    training/          Keras model, preprocessing inside, weighted SCCE -> exported model
      statistics budget model strategy early_stopping tensorboard progress
      multiworker_fit serving_names trainer export
          |
    evaluation/        untouched test split -> metrics, operating point, baselines, report, gate
      metrics decision_rule baselines evaluate report vertex_schema gate
          |
    registry/          local directory registry or Vertex AI Model Registry
      base local vertex champion labels provenance
          |
    batch_prediction/  registered model -> Beam RunInference over a table -> predictions table
          |
    monitoring/        skew and drift of what is scored: statistics in SQL, distances, prior shift

Beside them: ``config`` (typed configuration built once), ``errors`` (every exception type),
``artifacts`` (the file layouts steps hand to each other), ``options_check`` and
``run_parameters`` (what the entry points validate before anything runs).
The KFP side (components, pipeline definitions, compile / submit / local run) lives in the
top-level ``components/`` and ``pipelines/`` packages; test doubles of Google services in
``fakes/`` (not part of the wheel or the image).
"""
