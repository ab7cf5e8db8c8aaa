"""Helpers the tests share (imported as ``helpers.<module>``; pytest puts tests/ on sys.path).

records          tiny TFRecord data folders with learnable features (schema.encode_record)
runs             tiny untrained run folders and their exports, made once per session
reference_numpy  plain NumPy references of the model's math
synth_data       the synthetic ActivityNet-format dataset with injected bad entries
videos           small generated video files

Fixtures built on them live in tests/conftest.py; test modules never import each other.
"""
