"""`vreloc synth` (transitional: the command still lives in pipeline.synth)."""
from pipeline.synth import add_arguments, main  # noqa: F401
