"""The data contract and its readers: the TFRecord schema and framing, the per-entry index, query/
reference pairing, the tf.data input pipeline, the benchmark's split files, the data manifest's one
reader and writer (manifest.py), and the typed artifacts stages hand each other (artifacts.py:
Dataset, Run, Export; versions.py: which versions of an export exist)."""
