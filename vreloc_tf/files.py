"""Small file helpers every stage needs: read JSON or fail clearly, write atomically, start a folder clean.

Why: a half-written manifest or run.json must never be read as a finished one (write
to a temporary name, then rename), and a missing or corrupt JSON file must produce one
line naming the file, not a traceback.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from typing import Any, Iterable, Iterator

from vreloc_tf.errors import InputError


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB chunks (model and index files can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str, what: str = "JSON file") -> Any:
    """The parsed content of ``path``; InputError naming the file if it is missing or not valid JSON."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected a {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a valid {what} ({exc})") from None


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"  # keeps the extension: some writers (keras .save) check it
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path: str, obj: Any, indent: int = 2) -> str:
    """Write ``obj`` as JSON to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=indent, default=str)
    return path


def clear_folder(folder: str, keep: Iterable[str] = ()) -> None:
    """Remove everything in ``folder`` except the entries named in ``keep`` (the folder itself stays)."""
    for name in os.listdir(folder):
        if name in keep:
            continue
        path = os.path.join(folder, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
