"""A data folder's ``manifest.json``: the one typed reader and writer (:class:`DataManifest`).

Why one module: the Beam jobs write the manifest (pipeline/staged_sink.py, through Beam's
FileSystems, so gs:// folders work), and every later stage reads it (through
:class:`vreloc_tf.data.artifacts.Dataset`). Both sides used to spell the same JSON keys by hand;
here the format is spelled once, and :meth:`DataManifest.encode` is the only place its bytes are
made, so a folder written before this module still opens and a folder written after it is the same
file byte for byte (``json.dumps(..., indent=2, sort_keys=True)``, UTF-8).

The file::

    feature_dim     int: the width of every record's features (Dataset.open checks it)
    source          the job and inputs of the write that made the folder (older folders: of every split)
    created         UTC time of that write (ISO 8601, seconds)
    code_version    vreloc_tf.__version__ of that write
    splits          per split: read / written / dead_lettered counts, shards, and its own source
    ...             the job's own keys, kept as they are in ``fields``: frames_per_feature, fps,
                    split_files, features (a FeatureSpec), labels, max_window, pca_file, videos, unassigned

Folders written by older code or by hand (tests) may lack any key but ``feature_dim``; a missing
key reads as None and is not written back.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any, Dict, Optional

from vreloc_tf import __version__, contract
from vreloc_tf.data.schema import MANIFEST_NAME
from vreloc_tf.errors import InputError
from vreloc_tf.files import atomic_path, read_json

TYPED_KEYS = ("feature_dim", "source", "created", "code_version", "splits")


@dataclasses.dataclass(frozen=True)
class DataManifest:
    """What a data folder holds (see the module docstring); ``fields`` are the job's own keys."""

    feature_dim: Any  # as recorded; Dataset.open refuses a folder where it is not a positive int
    splits: Optional[Dict[str, dict]] = None
    source: Optional[dict] = None
    created: Optional[str] = None
    code_version: Optional[str] = None
    fields: Dict[str, Any] = dataclasses.field(default_factory=dict)

    # ------------------------------------------------------------------ writing

    @classmethod
    def of_job(cls, fields: Dict[str, Any], source: dict, splits: Dict[str, dict]) -> "DataManifest":
        """The manifest a job writes now: its ``fields`` (``feature_dim`` and its own keys), the
        source of this write, its splits, stamped with the time and the code version."""
        own = {k: v for k, v in fields.items() if k not in TYPED_KEYS}
        return cls(fields["feature_dim"], splits, source,
                   datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), __version__, own)

    def to_json(self) -> Dict[str, Any]:
        """The manifest as the JSON object on disk (typed keys that are None are left out)."""
        typed = {"feature_dim": self.feature_dim, "source": self.source, "created": self.created,
                 "code_version": self.code_version, "splits": self.splits}
        return {**self.fields, **{k: v for k, v in typed.items() if v is not None or k == "feature_dim"}}

    def encode(self) -> bytes:
        """The bytes of ``manifest.json``: the one serialization (staged_sink writes them through Beam)."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True).encode("utf-8")

    def write(self, data_dir: str) -> str:
        """Write ``data_dir/manifest.json`` atomically (plain paths; Beam jobs write :meth:`encode`)."""
        path = os.path.join(data_dir, MANIFEST_NAME)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(self.encode())
        return path

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_json(cls, doc: Any, where: str) -> "DataManifest":
        if not isinstance(doc, dict):
            raise InputError(f"{where}: not a data manifest (expected a JSON object); rewrite the folder with its "
                             f"Beam job")
        return cls(doc.get("feature_dim"), doc.get("splits"), doc.get("source"), doc.get("created"),
                   doc.get("code_version"), {k: v for k, v in doc.items() if k not in TYPED_KEYS})

    @classmethod
    def read(cls, data_dir: str) -> "DataManifest":
        """``data_dir/manifest.json`` (InputError naming the file if it is missing or corrupt)."""
        path = os.path.join(data_dir, MANIFEST_NAME)
        return cls.from_json(read_json(path, "data manifest"), path)

    # ------------------------------------------------------------------ what it says

    @property
    def frames_per_feature(self) -> int:
        return int(self.fields.get("frames_per_feature") or contract.FRAMES_PER_FEATURE)

    @property
    def pca_file(self) -> Optional[str]:
        """The ``pca_file`` as recorded (relative to the folder, absolute, or a URL); Dataset resolves it."""
        return self.fields.get("pca_file")

    @property
    def features(self) -> Optional[dict]:
        """The recorded FeatureSpec JSON (None: written before specs were recorded)."""
        return self.fields.get("features")

    def split(self, name: str) -> dict:
        """The entry of split ``name`` ({} if the manifest has none)."""
        return (self.splits or {}).get(name) or {}
