"""`vreloc visualize` (transitional: the command still lives in vreloc_tf.visualize)."""
from vreloc_tf.visualize import add_arguments, main  # noqa: F401
