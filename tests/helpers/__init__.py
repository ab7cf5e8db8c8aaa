"""Helpers the tests share (imported as ``helpers.<module>``; pytest puts tests/ on sys.path).

records          tiny TFRecord data folders with learnable features (schema.encode_record)
runs             tiny untrained run folders and their exports, made once per session
reference_numpy  plain NumPy references of the model's math
synth_data       the synthetic ActivityNet-format dataset with injected bad entries
videos           small generated video files
weights          stand-in weight files in the published C3D and keras-hub CLIP formats (random values)
activitynet_pca  ActivityNet's published PCA file layout (PCA_activitynet_v1-3.hdf5), from given arrays

Fixtures built on them live in tests/conftest.py; test modules never import each other.
"""
