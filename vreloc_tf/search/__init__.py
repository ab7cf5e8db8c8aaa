"""Search a whole video library for a query clip (issues #13, #24): ANN proposes, a re-localizer re-localizes.

A library item is a video (its records merged into pieces); the re-localizer is a trained model, or
the training-free frame-level method for an index built without one.

* :mod:`vreloc_tf.search.embedding`  window embeddings at several scales (what the ANN index holds)
* :mod:`vreloc_tf.search.library`    the on-disk index: manifest (feature spec, PCA copy), FAISS file, metadata
                                      and feature parts; append, remove, validate on open
* :mod:`vreloc_tf.search.relocalize` the trained model run on a query and many reference spans, batched;
                                      the frame-level method with the same interface
* :mod:`vreloc_tf.search.search`     search (ANN -> re-localizer, one hit per video) and the exhaustive reference
* :mod:`vreloc_tf.search.evaluate`   recall@k and latency of both on a split (``vreloc evaluate-search``)
"""
