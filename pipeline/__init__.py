"""Apache Beam jobs that turn videos or the ActivityNet C3D file into TFRecords (see vreloc_tf.data.schema)."""
