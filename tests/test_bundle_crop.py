"""The crop geometry travels with the bundle: the trainer writes the geometry it prepared with into the
manifest, the daemon's face pipeline cuts that geometry, the config is only an explicit override."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from detectors import samples
from detectors.bundle import CropSpec, Manifest, load_bundle
from detectors.faces.centerface import CenterFaceDetector
from detectors.faces.factory import FacesConfig, build_face_pipeline
from detectors.faces.pipeline import FacePipeline, use_bundle_crop


@pytest.fixture(scope="module")
def detector():
    return CenterFaceDetector(det_max_side=320, threads=1)


def test_a_manifest_without_crop_loads_with_the_default_geometry(tiny_bundle_dir, tmp_path):
    """Older manifests (no ``crop``) get 256 px / 1.3 / arcface5: what the face pipeline cut before the field."""
    d = json.loads((tiny_bundle_dir / "manifest.json").read_text())
    d.pop("crop", None)
    assert Manifest.from_dict(d).crop == CropSpec(size=256, scale=1.3, template="arcface5")


def test_pipeline_follows_the_bundle_unless_configured(detector, caplog):
    pipe = FacePipeline(detector)
    assert (pipe.crop_size, pipe.crop_scale, pipe.crop_explicit) == (256, 1.3, (False, False))
    assert use_bundle_crop(pipe, CropSpec(size=128, scale=1.5)) == (128, 1.5)
    assert pipe.process(samples.astronaut())[0].crop.shape == (128, 128, 3)

    explicit = FacePipeline(detector, crop_size=200)  # e.g. faces.crop_size: 200 in the daemon config
    with caplog.at_level(logging.WARNING, logger="detectors.faces.pipeline"):
        assert use_bundle_crop(explicit, CropSpec(size=128, scale=1.5)) == (200, 1.5)
    assert "override the bundle" in caplog.text and "expect skew" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="detectors.faces.pipeline"):
        use_bundle_crop(FacePipeline(detector, crop_size=128, crop_scale=1.5), CropSpec(size=128, scale=1.5))
    assert caplog.text == ""  # an override equal to the bundle's is no mismatch
    assert use_bundle_crop(object(), CropSpec()) is None  # a face stage that is not a FacePipeline is left alone


def test_faces_config_crop_is_unset_by_default():
    assert FacesConfig().crop_size is None and FacesConfig().crop_scale is None
    pipe = build_face_pipeline(FacesConfig(det_max_side=320, threads=1))
    assert (pipe.crop_size, pipe.crop_scale, pipe.crop_explicit) == (256, 1.3, (False, False))
    pipe = build_face_pipeline(FacesConfig(det_max_side=320, threads=1, crop_scale=1.4))
    assert (pipe.crop_size, pipe.crop_scale, pipe.crop_explicit) == (256, 1.4, (False, True))
    with pytest.raises(ValueError):
        FacesConfig(crop_size=16)


def test_the_daemon_cuts_the_bundles_crop(tiny_bundle_dir, detector, tmp_path):
    from daemon.models import BundleConfig, load_models
    from daemon.pipeline import PipelineConfig

    root = tmp_path / "b"
    shutil.copytree(tiny_bundle_dir, root)
    mpath = root / "manifest.json"
    d = json.loads(mpath.read_text())
    d["crop"] = {"size": 160, "scale": 1.4, "template": "arcface5"}  # the manifest is not among the hashed files
    mpath.write_text(json.dumps(d))
    bundle = load_bundle(root)
    faces = FacePipeline(detector)
    models = load_models(bundle, BundleConfig.defaults(threads=1), PipelineConfig(), faces)  # what Daemon.start runs
    try:
        assert (faces.crop_size, faces.crop_scale) == (160, 1.4)
        assert faces.process(samples.astronaut())[0].crop.shape == (160, 160, 3)
    finally:
        models.close()
