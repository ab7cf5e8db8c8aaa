"""`vreloc extract-video` (transitional: the command still lives in pipeline.extract_video)."""
from pipeline.extract_video import add_arguments, main  # noqa: F401
