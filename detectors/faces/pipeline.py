"""The face pipeline shared by the daemon and the trainer's preprocessing (no train/serve skew).

detect -> filter (score, size) -> keep the best ``max_faces`` -> align (5-point similarity,
``align_face(image, kps, crop_size, crop_scale)``) -> optional identity embedding, batched over all
faces of all images of one call.

Quality: ``min(min(face width, face height) / 100 px, 1) * detection score``. It is in [0, 1],
reaches the score once the face is 100 px on its short side (the size where forensic detectors
stop losing accuracy to resampling), and falls linearly for smaller faces. Faces are ranked by it
when more than ``max_faces`` are found.

Classifier crop geometry: the bundle's (its manifest ``crop``, the geometry its training data was prepared
with). A pipeline built without ``crop_size`` / ``crop_scale`` cuts 256 px at scale 1.3 until
:func:`use_bundle_crop` hands it a bundle's crop (the daemon does at model load); a value given
explicitly (the ``faces.crop_size`` / ``faces.crop_scale`` config) is an override that stays, with a
warning when it differs from the bundle's.

Embedder crop geometry: an embedder may carry ``crop_size`` and ``crop_scale`` attributes (ArcFace:
112 and 1.0); its crops are then cut separately with those. Without them it gets the pipeline's
own crops (e.g. an embedding head trained on our 256/1.3 crops).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from detectors.faces.align import align_face
from detectors.faces.roi import RegionPlan, RegionPlanner
from detectors.faces.types import Face, FaceDetector, FaceEmbedder

log = logging.getLogger(__name__)

QUALITY_FULL_SIZE_PX = 100.0
DEFAULT_CROP_SIZE = 256  # the face pipeline's and CropSpec's default (detectors.bundle)
DEFAULT_CROP_SCALE = 1.3


def face_quality(face: Face) -> float:
    """``min(min(w, h) / 100, 1) * score`` (see module docstring)."""
    side = max(0.0, min(face.width, face.height))
    return float(min(side / QUALITY_FULL_SIZE_PX, 1.0) * face.score)


@dataclass
class FaceObservation:
    """One face of one frame, ready for the classifiers and the tracker.

    face: frame coordinates; ``face.embedding`` is filled when an embedder is configured.
    crop: aligned (S, S, 3) uint8 RGB crop (S = pipeline ``crop_size``).
    quality: see :func:`face_quality`.
    """

    face: Face
    crop: np.ndarray
    quality: float


class FacePipeline:
    """Detector + alignment (+ embedder). Synchronous; the daemon calls it from a worker thread."""

    def __init__(
        self,
        detector: FaceDetector,
        embedder: FaceEmbedder | None = None,
        crop_size: int | None = None,
        crop_scale: float | None = None,
        min_face_px: int = 24,
        max_faces: int = 32,
        min_score: float = 0.5,
    ):
        """``crop_size`` / ``crop_scale``: an explicit classifier crop geometry (kept over a bundle's); None:
        256 px / 1.3 until :func:`use_bundle_crop` sets the bundle's."""
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        self.detector = detector
        self.embedder = embedder
        self.min_face_px = float(min_face_px)
        self.max_faces = int(max_faces)
        self.min_score = float(min_score)
        self.crop_explicit = (crop_size is not None, crop_scale is not None)
        self.set_crop(DEFAULT_CROP_SIZE if crop_size is None else crop_size,
                      DEFAULT_CROP_SCALE if crop_scale is None else crop_scale)

    def set_crop(self, size: int, scale: float) -> None:
        """Cut classifier crops of ``size`` px at ``scale`` from now on."""
        if size < 8:
            raise ValueError(f"crop_size must be >= 8, got {size}")
        if scale < 1.0:
            raise ValueError(f"crop_scale must be >= 1.0, got {scale}")
        self.crop_size = int(size)
        self.crop_scale = float(scale)
        embedder = self.embedder
        emb_size = getattr(embedder, "crop_size", None) if embedder is not None else None
        emb_scale = getattr(embedder, "crop_scale", None) if embedder is not None else None
        self._emb_geometry: tuple[int, float] | None = None
        if embedder is not None and emb_size is not None:
            geometry = (int(emb_size), float(emb_scale if emb_scale is not None else 1.0))
            if geometry != (self.crop_size, self.crop_scale):
                self._emb_geometry = geometry

    @property
    def name(self) -> str:
        return self.detector.name + (f"+{self.embedder.name}" if self.embedder is not None else "")

    def select(self, faces: Sequence[Face]) -> list[Face]:
        """Drop faces below ``min_score`` or smaller than ``min_face_px``; keep the best ``max_faces``."""
        kept = [
            f for f in faces
            if f.score >= self.min_score and min(f.width, f.height) >= self.min_face_px
        ]
        kept.sort(key=face_quality, reverse=True)
        return kept[: self.max_faces]

    @property
    def supports_regions(self) -> bool:
        """True when the detector can search regions of a frame (``detect_regions``; CenterFace)."""
        return callable(getattr(self.detector, "detect_regions", None))

    def full_pass_pixels(self, width: int, height: int) -> int:
        """Network pixels of a full-frame pass (for the region planner's cost check)."""
        fn = getattr(self.detector, "network_pixels", None)
        return int(fn(width, height)) if callable(fn) else width * height

    def full_pass_scale(self, width: int, height: int) -> float:
        """Resize factor of a full-frame pass (region passes never see faces smaller than this)."""
        fn = getattr(self.detector, "input_size", None)
        return float(fn(width, height)[0]) if callable(fn) else 1.0

    def _detect(self, image: np.ndarray, plan: RegionPlan | None) -> list[Face]:
        if plan is None:
            return self.detector.detect(image)
        return self.detector.detect_regions(image, plan.regions, plan.input_px)  # type: ignore[attr-defined]

    def _observe(self, image: np.ndarray, plan: RegionPlan | None = None
                 ) -> tuple[list[FaceObservation], list[np.ndarray]]:
        obs: list[FaceObservation] = []
        emb_crops: list[np.ndarray] = []
        for f in self.select(self._detect(image, plan)):
            try:
                crop = align_face(image, f.kps, self.crop_size, self.crop_scale)
                if self.embedder is not None and self._emb_geometry is not None:
                    emb_crops.append(align_face(image, f.kps, *self._emb_geometry))
            except ValueError as e:  # degenerate landmarks
                log.debug("face skipped: %s", e)
                continue
            if self.embedder is not None and self._emb_geometry is None:
                emb_crops.append(crop)
            obs.append(FaceObservation(face=f, crop=crop, quality=face_quality(f)))
        return obs, emb_crops

    def process(self, image: np.ndarray) -> list[FaceObservation]:
        """Faces of one RGB uint8 HxWx3 image, best quality first."""
        return self.process_many([image])[0]

    def process_many(
        self,
        images: Iterable[np.ndarray],
        regions: Sequence[RegionPlan | None] | None = None,
    ) -> list[list[FaceObservation]]:
        """Faces of several images; all their crops are embedded in one batch.

        ``regions``: per image, None (search the whole frame) or a :class:`RegionPlan` of squares
        to search instead (:mod:`detectors.faces.roi`; needs :attr:`supports_regions`).
        """
        images = list(images)
        if regions is None:
            regions = [None] * len(images)
        elif len(regions) != len(images):
            raise ValueError(f"{len(regions)} region lists for {len(images)} images")
        elif not self.supports_regions and any(r is not None for r in regions):
            raise ValueError(f"face detector {self.detector.name} cannot search regions")
        return self._process(images, lambda i: regions[i], lambda i, obs: None)

    def process_planned(
        self, images: Sequence[np.ndarray], keys: Sequence[object], planner: RegionPlanner,
        pts: Sequence[float | None] | None = None,
    ) -> tuple[list[list[FaceObservation]], list[RegionPlan | None]]:
        """Like :meth:`process_many`, with each image's pass chosen by ``planner`` for its stream
        ``keys[i]`` (stream time ``pts[i]``), in order, so a later frame of a stream uses the faces
        an earlier one just found.

        Returns (observations per image, the plan each image used: None = full pass).
        """
        if len(keys) != len(images):
            raise ValueError(f"{len(keys)} stream keys for {len(images)} images")
        plans: list[RegionPlan | None] = [None] * len(images)

        def plan(i: int) -> RegionPlan | None:
            plans[i] = planner.plan(keys[i], images[i].shape, pts[i] if pts is not None else None
                                    ) if self.supports_regions else None
            return plans[i]

        def done(i: int, obs: list[FaceObservation]) -> None:
            planner.update(keys[i], images[i].shape, [o.face for o in obs], plans[i])

        return self._process(list(images), plan, done), plans

    def _process(self, images: list[np.ndarray], plan_of, on_done) -> list[list[FaceObservation]]:
        per_image: list[list[FaceObservation]] = []
        all_obs: list[FaceObservation] = []
        all_crops: list[np.ndarray] = []
        for i, image in enumerate(images):
            obs, crops = self._observe(image, plan_of(i))
            on_done(i, obs)
            per_image.append(obs)
            all_obs.extend(obs)
            all_crops.extend(crops)
        if self.embedder is not None and all_obs:
            emb = np.asarray(self.embedder.embed(np.stack(all_crops)), dtype=np.float32)
            if emb.shape[0] != len(all_obs):
                raise RuntimeError(
                    f"embedder {self.embedder.name} returned {emb.shape[0]} embeddings for {len(all_obs)} crops"
                )
            for o, e in zip(all_obs, emb):
                o.face.embedding = e
        return per_image


def use_bundle_crop(faces, crop) -> tuple[int, float] | None:
    """Make ``faces`` cut the classifier crops the bundle was trained on (``crop``: its manifest
    :class:`~detectors.bundle.CropSpec`), except for a ``crop_size`` / ``crop_scale`` given explicitly,
    which is kept and logged as an override when it differs. Returns the geometry in use; None (nothing
    done) for a face stage that is not a :class:`FacePipeline` (test doubles)."""
    if not isinstance(faces, FacePipeline):
        return None
    size_set, scale_set = faces.crop_explicit
    size = faces.crop_size if size_set else int(crop.size)
    scale = faces.crop_scale if scale_set else float(crop.scale)
    if (size, scale) != (faces.crop_size, faces.crop_scale):
        faces.set_crop(size, scale)
        log.info("face crops follow the bundle: %d px at scale %s", size, scale)
    if size != int(crop.size) or abs(scale - float(crop.scale)) > 1e-6:
        log.warning("faces.crop_size/crop_scale override the bundle: crops are %sx%s at scale %s but the bundle was "
                    "trained on %sx%s at scale %s: expect skew", size, size, scale, crop.size, crop.size, crop.scale)
    return size, scale
