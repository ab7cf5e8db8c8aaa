"""What made a set of features: the backbone, its weights, the frame rate and the PCA.

Why: a model only understands features made exactly the way its training features were
made. A clip extracted with another backbone, other weights, another sampling rate or
another PCA has the right shape and the wrong meaning, and nothing downstream could
tell. So every artifact that holds or consumes features records one :class:`FeatureSpec`
(the data folder's ``manifest.json`` under ``features``, a run's ``run.json``, an export's
``assets.extra/vreloc.json``, a library index's ``manifest.json``), and every consumer
calls :meth:`FeatureSpec.check_same` before it mixes two of them: a mismatch is one
:class:`FeatureMismatchError` line naming both sides and what to do.

Fields that cannot be known (the published ActivityNet features were made by a C3D and a
PCA whose files we do not hold) are ``None`` and are not compared; everything known is.
The spec is plain data (JSON in, JSON out); the backbones that produce it live in
``pipeline/backbones.py``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional

from vreloc_tf.errors import InputError

MANIFEST_KEY = "features"  # where a data folder's / index's manifest holds the spec

# Backbone names that no video extractor can reproduce.
SYNTHETIC = "synthetic"  # `vreloc synth`: features drawn from a model of C3D features
PUBLISHED_C3D = "c3d"  # the ActivityNet release is C3D fc7 + PCA, with unknown files


class FeatureMismatchError(InputError):
    """Two artifacts hold or expect features made differently; the message names both."""


def _short(sha: Optional[str]) -> str:
    return sha[:12] if sha else "unknown"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """How features were made (see the module docstring); frozen, JSON-serializable."""

    backbone: str  # "c3d" | "clip" | "synthetic"
    feature_dim: int  # D of the stored features (after PCA)
    raw_dim: Optional[int] = None  # the backbone's output width before PCA (4096 for C3D fc7)
    weights: Optional[str] = None  # file, folder or preset handle the weights came from (as given)
    weights_sha256: Optional[str] = None  # of the weights file; None: random weights or not known
    random_seed: Optional[int] = None  # set: seeded RANDOM weights, meaningless features (tests, demos)
    sample_fps: Optional[float] = None  # frames sampled per second (frame backbones); None: every frame
    frames_per_feature: Optional[int] = None  # frames (of the sampled stream) behind one feature
    pca_file: Optional[str] = None  # absolute path, or relative to the artifact that records it
    pca_sha256: Optional[str] = None  # of the PCA file; None: no PCA, or not known
    pca_components: Optional[int] = None  # PCA output dims (= feature_dim when a PCA is applied)
    mean: Optional[str] = None  # C3D input mean: a mean cube file, or the per-channel BGR values; None: unknown
    mean_sha256: Optional[str] = None  # of the mean cube file
    description: Optional[str] = None  # one human line: where the features came from

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> Dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: Any, where: str = "features") -> "FeatureSpec":
        if not isinstance(data, dict) or not isinstance(data.get("backbone"), str) \
                or not isinstance(data.get("feature_dim"), int):
            raise InputError(f"{where}: not a feature spec (expected an object with 'backbone' and 'feature_dim')")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def of_manifest(cls, manifest: Any, where: str) -> Optional["FeatureSpec"]:
        """The spec a manifest records under ``features`` (None for manifests written before specs existed)."""
        if not isinstance(manifest, dict) or manifest.get(MANIFEST_KEY) is None:
            return None
        return cls.from_json(manifest[MANIFEST_KEY], f"{where}: '{MANIFEST_KEY}'")

    # ------------------------------------------------------------------ derived

    @property
    def is_random(self) -> bool:
        return self.random_seed is not None

    @property
    def extractable(self) -> bool:
        """Whether a video backbone can make more features like these (not synthetic ones)."""
        return self.backbone != SYNTHETIC

    def resolved_pca(self, base: Optional[str]) -> Optional[str]:
        """The PCA path, a relative one taken against ``base`` (the folder of the artifact)."""
        if not self.pca_file or "://" in self.pca_file or os.path.isabs(self.pca_file) or base is None:
            return self.pca_file
        return os.path.normpath(os.path.join(base, self.pca_file))

    def with_pca_path(self, path: Optional[str]) -> "FeatureSpec":
        return dataclasses.replace(self, pca_file=path)

    def summary(self) -> str:
        """One line: backbone, weights, rate, PCA (for messages and logs)."""
        if self.backbone == SYNTHETIC:
            return f"synthetic {self.feature_dim}-d features (vreloc synth)"
        if self.is_random:
            weights = f"RANDOM weights (seed {self.random_seed})"
        elif self.weights_sha256:
            weights = f"weights sha256 {_short(self.weights_sha256)}"
        else:
            weights = f"weights {self.weights or 'unknown'}"
        rate = f", {self.sample_fps:g} frames/s" if self.sample_fps else ""
        if self.pca_sha256:
            pca = f", PCA to {self.feature_dim} (sha256 {_short(self.pca_sha256)})"
        elif self.pca_components or self.pca_file:
            pca = f", PCA to {self.feature_dim} ({self.pca_file or 'file unknown'})"
        else:
            pca = f", {self.feature_dim}-d"
        return f"{self.backbone} ({weights}{rate}{pca})"

    # ------------------------------------------------------------------ the check

    def differences(self, other: "FeatureSpec") -> list:
        """What differs between two specs, as short phrases; fields unknown on either side are skipped."""
        diffs = []
        if self.backbone != other.backbone:
            diffs.append(f"backbone {self.backbone} vs {other.backbone}")
            return diffs
        if self.feature_dim != other.feature_dim:
            diffs.append(f"{self.feature_dim}-d vs {other.feature_dim}-d")
        if self.is_random != other.is_random or (self.is_random and self.random_seed != other.random_seed):
            diffs.append(f"weights {self._weights_word()} vs {other._weights_word()}")
        elif self.weights_sha256 and other.weights_sha256 and self.weights_sha256 != other.weights_sha256:
            diffs.append(f"weights sha256 {_short(self.weights_sha256)} vs {_short(other.weights_sha256)}")
        if (self.sample_fps or None) != (other.sample_fps or None) and self.sample_fps and other.sample_fps:
            diffs.append(f"{self.sample_fps:g} vs {other.sample_fps:g} frames/s")
        elif bool(self.sample_fps) != bool(other.sample_fps):
            diffs.append(f"frame rate {self._rate_word()} vs {other._rate_word()}")
        if self.pca_sha256 and other.pca_sha256 and self.pca_sha256 != other.pca_sha256:
            diffs.append(f"PCA sha256 {_short(self.pca_sha256)} vs {_short(other.pca_sha256)}")
        if self.mean and other.mean and (self.mean_sha256, self.mean if not self.mean_sha256 else "") != (
                other.mean_sha256, other.mean if not other.mean_sha256 else ""):
            diffs.append(f"input mean {self.mean} vs {other.mean}")
        return diffs

    def _weights_word(self) -> str:
        return f"RANDOM (seed {self.random_seed})" if self.is_random else (
            f"sha256 {_short(self.weights_sha256)}" if self.weights_sha256 else str(self.weights or "unknown"))

    def _rate_word(self) -> str:
        return f"{self.sample_fps:g} frames/s" if self.sample_fps else "every frame"

    def check_same(self, other: Optional["FeatureSpec"], mine: str, theirs: str, hint: str = "") -> None:
        """Raise :class:`FeatureMismatchError` when ``other`` was made differently from ``self``.

        ``mine``/``theirs`` name the two sides (``"the model"``, ``"--data runs/x"``);
        ``other=None`` (an artifact from before specs were recorded) passes unchecked.
        """
        if other is None:
            return
        diffs = self.differences(other)
        if diffs:
            raise FeatureMismatchError(
                f"features made differently: {mine} has {self.summary()}, {theirs} {other.summary()} "
                f"({'; '.join(diffs)}){'; ' + hint if hint else ''}")
