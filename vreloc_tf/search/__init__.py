"""Search a whole video library for a query clip (issue #13): ANN proposes, the model re-localizes.

* :mod:`vreloc_tf.search.embedding`  window embeddings at several scales (what the ANN index holds)
* :mod:`vreloc_tf.search.library`    the on-disk index: manifest, FAISS file, metadata and feature parts;
                                      append, remove, validate on open
* :mod:`vreloc_tf.search.relocalize` the trained model run on a query and many reference spans, batched
* :mod:`vreloc_tf.search.search`     search (ANN -> model) and the exhaustive reference (model on every video)
* :mod:`vreloc_tf.search.evaluate`   recall@k and latency of both on a split (``vreloc evaluate-search``)
"""
