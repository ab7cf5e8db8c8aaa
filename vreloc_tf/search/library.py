"""The library index on disk: a FAISS file over window vectors, plus metadata and features in parts.

Why this layout: a library grows by appending videos and shrinks by removing some, and must scale to
millions of windows, so nothing is one big JSON and nothing is rewritten on append except the FAISS
file (which FAISS needs whole) and the small manifest::

    INDEX/manifest.json           format, model, feature dim, PCA, embedding spec, FAISS type and the
                                  FAISS file's size and sha256, the parts, counts
    INDEX/index.faiss             IndexIDMap2(IndexFlatIP) or IndexIVFFlat (inner product on unit vectors);
                                  a window's FAISS id is its global window number
    INDEX/parts/part-NNNNN/       one per append (a build or `vreloc index add`), NumPy files opened as
        videos.npy                memmaps: per video (number, video_id, split, entry_index, label,
                                  window_start, length, feature_offset, first_window, windows, fps, ...)
        windows.npy               per window (id, video number, start, end, scale)
        features.npy              float32 [steps, D]: every video's features, for the re-localization
    INDEX/removed.npy             tombstones: global numbers of removed videos (their windows are out of FAISS)

Opening checks every file against the manifest (sizes, the FAISS file's sha256, counts), so a
truncated or corrupt index is refused with one line (:class:`IndexError_`) and nothing is served from it.
Writes go to temporary names and are renamed; the manifest is written last. One writer at a time.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from vreloc_tf.errors import InputError
from vreloc_tf.files import atomic_path, file_sha256, read_json, write_json_atomic
from vreloc_tf.search.embedding import EmbeddingSpec

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its per-CPU-feature import attempts are noise

FORMAT = "vreloc-search-index/1"
MANIFEST = "manifest.json"
FAISS_FILE = "index.faiss"
REMOVED_FILE = "removed.npy"
PARTS_DIR = "parts"
INDEX_TYPES = ("auto", "flat", "ivf")
IVF_MIN_WINDOWS = 200_000  # "auto": below this a flat scan is faster than IVF's probing (and exact)
DEFAULT_NPROBE = 16

VIDEO_FIELDS = [("number", "<i8"), ("entry_index", "<i8"), ("label", "<i8"), ("window_start", "<i8"),
                ("length", "<i8"), ("feature_offset", "<i8"), ("first_window", "<i8"), ("windows", "<i8"),
                ("fps", "<f4"), ("frames_per_feature", "<i4")]
WINDOW_DTYPE = np.dtype([("id", "<i8"), ("video", "<i8"), ("start", "<i4"), ("end", "<i4"), ("scale", "<i4")])


class IndexError_(InputError):
    """A missing, corrupt or mismatched library index; the message names the file and what to do."""


@dataclasses.dataclass
class VideoEmbedding:
    """One library video, embedded: what the Beam job hands to :meth:`LibraryIndex.append`."""

    video_id: str
    split: str
    entry_index: int
    label: int
    window_start: int  # where the record's features start in the source video (feature steps)
    features: np.ndarray  # float32 [L, D]
    spans: np.ndarray  # int32 [N, 3] (start, end, scale), relative to the record
    vectors: np.ndarray  # float32 [N, E]
    fps: float = -1.0
    frames_per_feature: int = 16

    @property
    def key(self) -> Tuple[str, str, int]:
        return self.video_id, self.split, int(self.entry_index)

    def to_bytes(self) -> bytes:
        """NumPy .npz bytes (no pickle): how the Beam job stages embedded videos."""
        import io
        import json

        meta = json.dumps({"video_id": self.video_id, "split": self.split, "entry_index": int(self.entry_index),
                           "label": int(self.label), "window_start": int(self.window_start),
                           "fps": float(self.fps), "frames_per_feature": int(self.frames_per_feature)})
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(meta), features=np.asarray(self.features, np.float32),
                 spans=np.asarray(self.spans, np.int32), vectors=np.asarray(self.vectors, np.float32))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "VideoEmbedding":
        import io
        import json

        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(features=z["features"], spans=z["spans"], vectors=z["vectors"], **meta)


@dataclasses.dataclass(frozen=True)
class Video:
    """A library video's metadata and (memmapped) features."""

    number: int
    video_id: str
    split: str
    entry_index: int
    label: int
    window_start: int
    fps: float
    frames_per_feature: int
    features: np.ndarray

    def seconds(self, index: int) -> Optional[float]:
        """Seconds of a source-video feature index, None where the frame rate is unknown."""
        return round(index * self.frames_per_feature / self.fps, 3) if self.fps > 0 else None


@contextlib.contextmanager
def one_faiss_thread():
    """FAISS on one thread for the duration: for a single query, OpenMP's fan-out costs more than the
    scan itself (measured on 28k windows, 2 busy cores: 24 ms with 2 threads, 0.33 ms with 1)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _save_npy(path: str, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


class LibraryIndex:
    """An open library index (see the module docstring); :meth:`create` or :meth:`open` one."""

    def __init__(self, path: str, manifest: dict, faiss_index, parts: List[dict], removed: np.ndarray):
        self.path, self.manifest, self.faiss, self.parts = path, manifest, faiss_index, parts
        self.removed = removed
        self._removed_set = set(int(v) for v in removed)
        self._first_windows = np.array([p["first_window"] for p in parts], np.int64)
        self._first_videos = np.array([p["first_video"] for p in parts], np.int64)

    # ------------------------------------------------------------------ creating and opening

    @classmethod
    def create(cls, path: str, feature_dim: int, spec: EmbeddingSpec, embed_dim: int, model: dict,
               pca: Optional[dict] = None, index_type: str = "auto", nprobe: int = DEFAULT_NPROBE,
               overwrite: bool = False) -> "LibraryIndex":
        """An empty index in ``path`` (refuses a folder holding one unless ``overwrite``)."""
        if index_type not in INDEX_TYPES:
            raise InputError(f"--index-type {index_type!r}: expected one of {', '.join(INDEX_TYPES)}")
        if os.path.exists(os.path.join(path, MANIFEST)) and not overwrite:
            raise IndexError_(f"{path}: already holds an index; add videos with `vreloc index add`, "
                              f"or rebuild with --overwrite")
        if os.path.isdir(path) and overwrite:
            import shutil

            for name in (FAISS_FILE, REMOVED_FILE, MANIFEST):
                if os.path.exists(os.path.join(path, name)):
                    os.remove(os.path.join(path, name))
            shutil.rmtree(os.path.join(path, PARTS_DIR), ignore_errors=True)
        os.makedirs(os.path.join(path, PARTS_DIR), exist_ok=True)
        manifest = {
            "format": FORMAT, "model": model, "feature_dim": int(feature_dim), "pca": pca,
            "embedding": {**spec.to_json(), "dim": int(embed_dim)},
            "index": {"type": index_type, "file": FAISS_FILE, "bytes": 0, "sha256": None, "ntotal": 0,
                      "nprobe": int(nprobe)},
            "parts": [], "videos": 0, "windows": 0, "removed_videos": 0, "live_videos": 0, "live_windows": 0,
        }
        index = cls(os.path.abspath(path), manifest, None, [], np.zeros(0, np.int64))
        _save_npy(os.path.join(path, REMOVED_FILE), index.removed)
        write_json_atomic(os.path.join(path, MANIFEST), manifest)
        return index

    @classmethod
    def open(cls, path: str) -> "LibraryIndex":
        """Open and check an index folder; :class:`IndexError_` naming the file at fault otherwise."""
        import faiss

        manifest_path = os.path.join(path, MANIFEST)
        if not os.path.isdir(path):
            raise IndexError_(f"--index {path}: no such folder; build one with `vreloc index build`")
        if not os.path.exists(manifest_path):
            raise IndexError_(f"--index {path}: not a library index (no {MANIFEST}); build one with "
                              f"`vreloc index build`")
        manifest = read_json(manifest_path, "index manifest")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise IndexError_(f"{manifest_path}: not a {FORMAT} manifest; rebuild the index")
        info = manifest["index"]
        faiss_index = None
        faiss_path = os.path.join(path, info["file"])
        if info["ntotal"] or info["sha256"]:
            if not os.path.exists(faiss_path):
                raise IndexError_(f"{faiss_path}: missing; the index is incomplete, rebuild it")
            size = os.path.getsize(faiss_path)
            if size != info["bytes"]:
                raise IndexError_(f"{faiss_path}: {size} bytes but the manifest says {info['bytes']} "
                                  f"(truncated or overwritten); rebuild the index")
            if file_sha256(faiss_path) != info["sha256"]:
                raise IndexError_(f"{faiss_path}: checksum differs from the manifest's (corrupt); rebuild the index")
            try:
                faiss_index = faiss.read_index(faiss_path)
            except RuntimeError as exc:
                raise IndexError_(f"{faiss_path}: FAISS cannot read it ({str(exc).splitlines()[0]}); "
                                  f"rebuild the index") from None
            if faiss_index.ntotal != info["ntotal"] or faiss_index.d != manifest["embedding"]["dim"]:
                raise IndexError_(f"{faiss_path}: holds {faiss_index.ntotal} vectors of dim {faiss_index.d}, "
                                  f"the manifest says {info['ntotal']} of dim {manifest['embedding']['dim']}; "
                                  f"rebuild the index")
        parts = [cls._open_part(path, p, manifest["feature_dim"]) for p in manifest["parts"]]
        removed_path = os.path.join(path, REMOVED_FILE)
        try:
            removed = np.load(removed_path)
        except (OSError, ValueError) as exc:
            raise IndexError_(f"{removed_path}: unreadable ({exc}); rebuild the index") from None
        if len(removed) != manifest["removed_videos"]:
            raise IndexError_(f"{removed_path}: {len(removed)} removed videos, the manifest says "
                              f"{manifest['removed_videos']}; rebuild the index")
        return cls(os.path.abspath(path), manifest, faiss_index, parts, removed.astype(np.int64))

    @staticmethod
    def _open_part(path: str, part: dict, feature_dim: int) -> dict:
        folder = os.path.join(path, PARTS_DIR, part["name"])
        arrays = {}
        for name, shape in (("videos", (part["videos"],)), ("windows", (part["windows"],)),
                            ("features", (part["steps"], feature_dim))):
            file = os.path.join(folder, f"{name}.npy")
            try:
                arrays[name] = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise IndexError_(f"{file}: unreadable ({str(exc).splitlines()[0]}); the part is truncated or "
                                  f"missing, rebuild the index") from None
            if tuple(arrays[name].shape) != tuple(shape):
                raise IndexError_(f"{file}: shape {tuple(arrays[name].shape)}, the manifest says {tuple(shape)}; "
                                  f"rebuild the index")
        return {**part, **arrays}

    # ------------------------------------------------------------------ what it holds

    @property
    def feature_dim(self) -> int:
        return int(self.manifest["feature_dim"])

    @property
    def embedding(self) -> EmbeddingSpec:
        return EmbeddingSpec.from_json(self.manifest["embedding"])

    @property
    def embed_dim(self) -> int:
        return int(self.manifest["embedding"]["dim"])

    @property
    def live_videos(self) -> int:
        return int(self.manifest["live_videos"])

    @property
    def live_windows(self) -> int:
        return int(self.manifest["live_windows"])

    def index_bytes(self) -> int:
        """Bytes on disk of the whole index folder (FAISS file, parts, manifest)."""
        total = 0
        for root, _, files in os.walk(self.path):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        return total

    def _part_of_video(self, number: int) -> Tuple[dict, int]:
        i = int(np.searchsorted(self._first_videos, number, side="right")) - 1
        part = self.parts[i]
        return part, int(number - part["first_video"])

    def video(self, number: int) -> Video:
        part, row = self._part_of_video(number)
        v = part["videos"][row]
        off, length = int(v["feature_offset"]), int(v["length"])
        return Video(int(v["number"]), str(v["video_id"]), str(v["split"]), int(v["entry_index"]), int(v["label"]),
                     int(v["window_start"]), float(v["fps"]), int(v["frames_per_feature"]),
                     part["features"][off:off + length])

    def live_video_numbers(self) -> np.ndarray:
        numbers = [np.asarray(p["videos"]["number"]) for p in self.parts]
        numbers = np.concatenate(numbers) if numbers else np.zeros(0, np.int64)
        return numbers[~np.isin(numbers, self.removed)]

    def windows(self, ids: np.ndarray) -> np.ndarray:
        """WINDOW_DTYPE rows of the given window ids."""
        ids = np.asarray(ids, np.int64)
        out = np.empty(len(ids), WINDOW_DTYPE)
        which = np.searchsorted(self._first_windows, ids, side="right") - 1
        for i, (wid, p) in enumerate(zip(ids, which)):
            out[i] = self.parts[p]["windows"][wid - self.parts[p]["first_window"]]
        return out

    def video_numbers_of(self, video_ids: Sequence[str]) -> np.ndarray:
        """Global numbers of the live videos whose video_id is one of ``video_ids``."""
        wanted = np.array(sorted(set(video_ids)), dtype=str)
        found = []
        for p in self.parts:
            vids = np.asarray(p["videos"]["video_id"]).astype(str)
            found.append(np.asarray(p["videos"]["number"])[np.isin(vids, wanted)])
        numbers = np.concatenate(found) if found else np.zeros(0, np.int64)
        return numbers[~np.isin(numbers, self.removed)]

    def live_keys(self) -> set:
        """(video_id, split, entry_index) of every live video: what an append must not add twice."""
        keys = set()
        for p in self.parts:
            v = p["videos"]
            live = ~np.isin(np.asarray(v["number"]), self.removed)
            keys.update(zip(np.asarray(v["video_id"])[live].astype(str).tolist(),
                            np.asarray(v["split"])[live].astype(str).tolist(),
                            np.asarray(v["entry_index"])[live].astype(int).tolist()))
        return keys

    def check_query_dim(self, vector: np.ndarray) -> None:
        if vector.shape[-1] != self.embed_dim:
            raise IndexError_(f"the query vector is {vector.shape[-1]}-d but the index {self.path} holds "
                              f"{self.embed_dim}-d vectors")

    # ------------------------------------------------------------------ nearest windows

    def nearest_windows(self, vector: np.ndarray, k: int, exclude_videos: Sequence[int] = ()) -> Tuple[np.ndarray, np.ndarray]:
        """(window ids, cosine similarities) of the ``k`` nearest live windows, best first,
        skipping windows of the video numbers in ``exclude_videos``."""
        vector = np.asarray(vector, np.float32).reshape(1, -1)
        self.check_query_dim(vector)
        if self.faiss is None or self.live_windows == 0:
            raise IndexError_(f"the index {self.path} holds no videos; add some with `vreloc index add`")
        exclude = np.asarray(list(exclude_videos), np.int64)
        self._set_nprobe()
        fetch = min(self.faiss.ntotal, k + (0 if exclude.size == 0 else 4 * k))
        while True:
            with one_faiss_thread():
                sims, ids = self.faiss.search(vector, fetch)
            sims, ids = sims[0], ids[0]
            keep = ids >= 0
            sims, ids = sims[keep], ids[keep]
            if exclude.size:
                owners = self.windows(ids)["video"]
                keep = ~np.isin(owners, exclude)
                sims, ids = sims[keep], ids[keep]
            if len(ids) >= k or fetch >= self.faiss.ntotal:
                return ids[:k], sims[:k]
            fetch = min(self.faiss.ntotal, fetch * 4)

    def _set_nprobe(self) -> None:
        import faiss

        if self.manifest["index"].get("built_type") == "ivf":
            faiss.extract_index_ivf(self.faiss).nprobe = int(self.manifest["index"]["nprobe"])

    # ------------------------------------------------------------------ append and remove

    def append(self, videos: Sequence[VideoEmbedding]) -> dict:
        """Add videos as one new part; returns the part's manifest entry. The FAISS file is rewritten,
        nothing else is."""
        if not videos:
            return {}
        import faiss

        m = self.manifest
        for v in videos:
            if v.features.ndim != 2 or v.features.shape[1] != self.feature_dim:
                raise IndexError_(f"video {v.video_id}: {tuple(v.features.shape)} features, the index holds "
                                  f"{self.feature_dim}-d features")
            if v.vectors.shape[1] != self.embed_dim:
                raise IndexError_(f"video {v.video_id}: {v.vectors.shape[1]}-d window vectors, the index holds "
                                  f"{self.embed_dim}-d vectors")
        first_video, first_window = int(m["videos"]), int(m["windows"])
        name = f"part-{len(m['parts']):05d}"
        folder = os.path.join(self.path, PARTS_DIR, name)
        os.makedirs(folder, exist_ok=True)
        id_width = max(len(v.video_id) for v in videos)
        split_width = max(max(len(v.split) for v in videos), 1)
        vdt = np.dtype([VIDEO_FIELDS[0], ("video_id", f"<U{id_width}"), ("split", f"<U{split_width}")]
                       + VIDEO_FIELDS[1:])
        table = np.zeros(len(videos), vdt)
        n_windows = sum(len(v.spans) for v in videos)
        windows = np.zeros(n_windows, WINDOW_DTYPE)
        offset = w = 0
        for i, v in enumerate(videos):
            n = len(v.spans)
            table[i] = (first_video + i, v.video_id, v.split, v.entry_index, v.label, v.window_start,
                        len(v.features), offset, first_window + w, n, v.fps, v.frames_per_feature)
            windows[w:w + n] = [(first_window + w + j, first_video + i, s, e, sc)
                                for j, (s, e, sc) in enumerate(v.spans)]
            offset += len(v.features)
            w += n
        features = np.concatenate([np.asarray(v.features, np.float32) for v in videos])
        vectors = np.ascontiguousarray(np.concatenate([v.vectors for v in videos]), np.float32)
        _save_npy(os.path.join(folder, "videos.npy"), table)
        _save_npy(os.path.join(folder, "windows.npy"), windows)
        _save_npy(os.path.join(folder, "features.npy"), features)

        if self.faiss is None:
            self.faiss = self._new_faiss(vectors)
        self.faiss.add_with_ids(vectors, windows["id"].astype(np.int64))
        part = {"name": name, "videos": len(videos), "windows": int(n_windows), "steps": int(len(features)),
                "first_video": first_video, "first_window": first_window}
        m["parts"].append(part)
        m["videos"] += len(videos)
        m["windows"] += int(n_windows)
        m["live_videos"] += len(videos)
        m["live_windows"] += int(n_windows)
        self._commit()
        self.parts.append(self._open_part(self.path, part, self.feature_dim))
        self._first_windows = np.append(self._first_windows, first_window)
        self._first_videos = np.append(self._first_videos, first_video)
        return part

    def _new_faiss(self, vectors: np.ndarray):
        """The FAISS index of the first append: flat below IVF_MIN_WINDOWS windows ("auto"), else IVF
        trained on these vectors (later appends are assigned to its lists without retraining)."""
        import faiss

        info = self.manifest["index"]
        kind = info["type"]
        if kind == "auto":
            kind = "ivf" if len(vectors) >= IVF_MIN_WINDOWS else "flat"
        d = self.embed_dim
        if kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        else:
            nlist = int(max(1, min(4 * np.sqrt(len(vectors)), len(vectors) // 39)))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = vectors[np.random.default_rng(0).permutation(len(vectors))[: 64 * nlist]]  # k-means cost bound
            index.train(sample)
            index.referenced_objects = [quantizer]  # keep the quantizer alive with the index
            info["nlist"] = nlist
        info["built_type"] = kind
        return index

    def remove(self, video_ids: Sequence[str]) -> int:
        """Remove every live video with one of ``video_ids``; returns how many. Their windows leave the
        FAISS index; their metadata stays in the parts, marked removed (tombstones)."""
        import faiss

        numbers = self.video_numbers_of(video_ids)
        if numbers.size == 0:
            return 0
        ids = []
        for number in numbers:
            part, row = self._part_of_video(int(number))
            v = part["videos"][row]
            ids.append(np.arange(int(v["first_window"]), int(v["first_window"]) + int(v["windows"]), dtype=np.int64))
        ids = np.concatenate(ids)
        removed = self.faiss.remove_ids(faiss.IDSelectorBatch(ids))
        if removed != len(ids):
            raise IndexError_(f"{self.path}: FAISS removed {removed} of {len(ids)} windows; rebuild the index")
        self.removed = np.concatenate([self.removed, numbers.astype(np.int64)])
        self._removed_set.update(int(n) for n in numbers)
        m = self.manifest
        m["removed_videos"] = int(len(self.removed))
        m["live_videos"] -= int(numbers.size)
        m["live_windows"] -= int(len(ids))
        self._commit()
        return int(numbers.size)

    def _commit(self) -> None:
        """FAISS file and tombstones first (temporary names, renamed), the manifest last."""
        import faiss

        info = self.manifest["index"]
        faiss_path = os.path.join(self.path, FAISS_FILE)
        with atomic_path(faiss_path) as tmp:
            faiss.write_index(self.faiss, tmp)
        info.update(bytes=os.path.getsize(faiss_path), sha256=file_sha256(faiss_path), ntotal=int(self.faiss.ntotal))
        _save_npy(os.path.join(self.path, REMOVED_FILE), self.removed)
        write_json_atomic(os.path.join(self.path, MANIFEST), self.manifest)


def describe(index: LibraryIndex) -> Dict[str, object]:
    """A short summary of an index (what `vreloc index` commands print)."""
    m = index.manifest
    return {"index": index.path, "videos": m["live_videos"], "windows": m["live_windows"],
            "removed_videos": m["removed_videos"], "parts": len(m["parts"]),
            "faiss": m["index"].get("built_type") or m["index"]["type"], "feature_dim": m["feature_dim"],
            "embedding": m["embedding"], "bytes": index.index_bytes()}
