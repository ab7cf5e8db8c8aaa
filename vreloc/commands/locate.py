"""`vreloc locate` (transitional: the command still lives in vreloc_tf.locate)."""
from vreloc_tf.locate import add_arguments, main  # noqa: F401
