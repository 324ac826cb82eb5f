"""Reading: record-batch sources (the narrow waist) and the tf.data feeds built on them."""
