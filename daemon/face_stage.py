"""The face stage: face detection (+ alignment, identity embeddings) of frames of all streams in
one thread, with per-stream region passes between full-frame detections.

:meth:`FaceStage.detect` takes a batch from the intake and answers the face observations of each
valid frame (keyed by ``id(frame)``); frames that are not RGB uint8 images, and the frames of a
batch the face pipeline failed on, are handed to ``drop`` (reason ``bad_frame``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

from daemon.metrics import Metrics
from daemon.types import Frame
from detectors.faces.pipeline import FaceObservation, FacePipeline
from detectors.faces.roi import RegionPlanner

log = logging.getLogger("fakewatch.pipeline")


def valid_image(frame: Frame) -> bool:
    img = frame.image
    return (
        isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
        and img.shape[0] > 0 and img.shape[1] > 0
    )


class FaceStage:
    """``faces`` runs on a dedicated thread; ``regions`` (None: full passes only) plans region passes."""

    def __init__(self, faces: FacePipeline, regions: RegionPlanner | None, metrics: Metrics,
                 drop: Callable[[Frame, str], None]):
        self.faces = faces
        self.regions = regions  # FacePipeline.process_planned runs full passes if the detector cannot do regions
        self.metrics = metrics
        self.drop = drop
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faces")

    def forget(self, stream_id: str) -> None:
        if self.regions is not None:
            self.regions.forget(stream_id)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def detect(self, batch: list[Frame]) -> dict[int, list[FaceObservation]]:
        """Face observations per frame of ``batch`` (keyed by ``id(frame)``); bad frames are dropped here."""
        frames = []
        ended = [f.stream_id for f in batch if f.end_of_stream]
        for f in batch:
            if f.end_of_stream:
                continue
            if not valid_image(f):
                log.warning("stream %s: frame %d is not an RGB uint8 image (%s); dropped", f.stream_id, f.seq,
                            getattr(f.image, "shape", None))
                self.drop(f, "bad_frame")
                continue
            frames.append(f)
        try:
            return await self._detect(frames) if frames else {}
        finally:
            for sid in ended:  # after this batch's frames of the stream were detected
                self.forget(sid)

    async def _detect(self, frames: list[Frame]) -> dict[int, list[FaceObservation]]:
        m = self.metrics
        planner = self.regions
        images = [f.image for f in frames]
        if planner is None:
            work = partial(self.faces.process_many, images)
        else:
            work = partial(self.faces.process_planned, images, [f.stream_id for f in frames], planner,
                           [f.pts for f in frames])
        t0 = time.perf_counter()
        try:
            answer = await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # e.g. a corrupt frame: drop this batch, keep going
            log.error("face stage failed on %d frames: %s", len(frames), e)
            for f in frames:
                self.drop(f, "bad_frame")
                self.forget(f.stream_id)
            return {}
        # one call covers frames of several streams: its time is shared out per frame (Histogram.time()
        # would count the whole call once)
        per_frame = (time.perf_counter() - t0) / len(frames)
        obs, plans = (answer, [None] * len(frames)) if planner is None else answer
        for plan in plans:
            m.detect_passes.labels("full" if plan is None else "regions").inc()
        results = {}
        detect = m.stage_latency.labels("detect")
        for f, o in zip(frames, obs, strict=True):
            results[id(f)] = o
            lbl = m.stream_label(f.stream_id)
            detect.observe(per_frame)
            m.frames_analysed.labels(lbl).inc()
            m.faces.labels(lbl).inc(len(o))
        return results
