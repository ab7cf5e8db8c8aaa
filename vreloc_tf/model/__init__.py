"""The models and what trains them to decode: custom Keras layers, the multiscale attention model and
Feng et al.'s CGBM, the losses, the label-free teacher and student average of weak supervision, and
the decoding rules of Eq. 20. Backend-agnostic: keras.ops only, no TensorFlow."""
