"""`vreloc evaluate` (transitional: the command still lives in vreloc_tf.evaluate)."""
from vreloc_tf.evaluate import add_arguments, main  # noqa: F401
