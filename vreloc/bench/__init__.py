"""The bench room: every benchmark of the project, in one package.

* :mod:`vreloc.bench.driver`     ``vreloc bench``: which parts run, the summary and the report (light:
                                 it imports none of what the parts measure)
* :mod:`vreloc.bench.parts`      each part in a process of its own (``python -m vreloc.bench.parts --part NAME``)
* :mod:`vreloc.bench.model`      the model's analytic parameter and FLOP counts, matmul rate, training pairs/s,
                                 inference latency, and their command line (``python -m vreloc.bench.model``)
* :mod:`vreloc.bench.serving`    the compiled model, the exported signature and gRPC, interleaved; requests/s
                                 with concurrent clients (``python -m vreloc.bench.serving``)
* :mod:`vreloc.bench.ingest`     ingest-activitynet records/s (``python -m vreloc.bench.ingest``)
* :mod:`vreloc.bench.records`    random TFRecord reads by offset, ours against TensorFlow's random reader
                                 (``vreloc bench --only records``)
* :mod:`vreloc.bench.backbones`  each video backbone's compute per minute of video against the same
                                 process's matmul rate (``python -m vreloc.bench.backbones``)
* :mod:`vreloc.bench.c3d`        C3D clips/s alone (``python -m vreloc.bench.c3d``)
* :mod:`vreloc.bench.search`     library search at 1k / 10k / 100k generated videos (``vreloc bench --only search``)

Why one room, and why here: a benchmark measures across packages (the serving bench needs the
model and generated data, the ingest bench needs Beam and synth), it is not library code a user
imports, and only the top layer (``vreloc/``) may import every package -- so the benchmarks sit
together under it instead of scattered over ``vreloc_tf/``, ``pipeline/`` and ``serving/``.

This ``__init__`` imports nothing, so ``vreloc bench --help`` stays light.
"""
