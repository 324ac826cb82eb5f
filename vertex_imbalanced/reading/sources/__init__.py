"""Record-batch sources: every source is a set of streams of Arrow RecordBatches."""
