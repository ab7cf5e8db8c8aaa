"""The data contract and its readers: the TFRecord schema and framing, the per-entry index, query/
reference pairing, the tf.data input pipeline, the benchmark's split files, and the typed artifacts
(Dataset, Run, Export) that stages hand each other."""
