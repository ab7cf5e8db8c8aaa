"""Content fingerprints of data files: what a run was trained on, by its bytes rather than its path.

Why: a run folder is resumed by running ``vreloc train`` on it again, and nothing tied the
resumed steps to the data the first steps saw: a different ``--data`` (or the same folder
written again by another ingest) would silently train the rest of the run on other data, with
run.json naming only the last. A path says where data was, not what it was; the SHA-256 of the
record files says what it was, survives moving or copying the folder, and changes with any byte.

The hash covers the files in order of their names relative to ``root``, and feeds in each
file's name, its length and then its bytes (read in 1 MiB blocks, so a large split never sits
in memory), so renaming, reordering, splitting or joining shards all change it.
"""
from __future__ import annotations

import hashlib
import os
from typing import Iterable, Optional

BLOCK = 1 << 20  # bytes read at a time


def _name(path: str, root: Optional[str]) -> str:
    """The name a file is hashed under: relative to ``root`` ('/'-separated), else its basename."""
    name = os.path.relpath(path, root) if root else os.path.basename(path)
    return name.replace(os.sep, "/")


def content_fingerprint(paths: Iterable[str], root: Optional[str] = None) -> str:
    """The hex SHA-256 over ``paths`` (sorted by their names relative to ``root``): per file its
    name, a NUL, its length in bytes (decimal), a NUL, then its bytes."""
    digest = hashlib.sha256()
    for name, path in sorted((_name(p, root), p) for p in paths):
        digest.update(name.encode("utf-8") + b"\0" + str(os.path.getsize(path)).encode() + b"\0")
        with open(path, "rb") as fh:
            while True:
                block = fh.read(BLOCK)
                if not block:
                    break
                digest.update(block)
    return digest.hexdigest()


def short(fingerprint: Optional[str]) -> str:
    """The first 16 hex digits, for messages (the full value is in the run folder's files)."""
    return (fingerprint or "none")[:16]
