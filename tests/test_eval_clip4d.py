"""CLIP 4D metrics: pinned definitions checked on a random-weight CLIP (transformers classes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from track4dgen.cameras import rig_cameras
from track4dgen.eval import clip4d
from test_eval_video import textured, tiny_clip


def test_orbit_cameras_start_at_the_front():
    cams = clip4d.orbit_cameras(8, 64)
    assert len(cams) == 8
    assert np.allclose(cams[0].w2c, rig_cameras(64)[0].w2c)  # azimuth 0 = conditioning front view
    assert np.allclose(cams[2].w2c, rig_cameras(64)[1].w2c)  # 90 degrees


def test_composite_on_white():
    rgba = np.zeros((2, 2, 4), np.float32)
    rgba[0, 0] = [1, 0, 0, 1]
    out = clip4d.composite(rgba)
    assert np.allclose(out[0, 0], [1, 0, 0]) and np.allclose(out[1, 1], [1, 1, 1])


def test_clip4d_definitions():
    clip = tiny_clip()
    a, b = textured(32, 32, 0), textured(32, 32, 1)
    F_, A = 3, 2
    static = np.broadcast_to(a, (F_, A, 32, 32, 3)).copy()
    m = clip4d.clip4d_metrics(clip, static, reference_image=a, prompt="a dog")
    assert m["clip_c"] == pytest.approx(1.0, abs=1e-5)  # nothing changes over time
    assert m["clip_f_img"] == pytest.approx(1.0, abs=1e-5)  # front render equals the reference
    assert m["clip_o_img"] == pytest.approx(1.0, abs=1e-5)
    assert m["clip_o_text"] == pytest.approx(m["clip_f_text"], abs=1e-6)

    changing = static.copy()
    changing[1, 1] = b  # view 1 flips to another image at frame 1
    m2 = clip4d.clip4d_metrics(clip, changing, reference_image=a, prompt="a dog")
    e = clip.encode_images(torch.from_numpy(np.stack([a, b]).astype(np.float32)).permute(0, 3, 1, 2))
    cos_ab = float(e[0] @ e[1])
    assert cos_ab < 0.999
    # view 0 keeps 1.0; view 1 has consecutive cosines (cos_ab, cos_ab): mean over views
    assert m2["clip_c"] == pytest.approx((1.0 + cos_ab) / 2, abs=1e-5)
    assert m2["clip_o_img"] == pytest.approx((F_ * A - 1 + cos_ab) / (F_ * A), abs=1e-5)
    assert m2["clip_f_img"] == pytest.approx(1.0, abs=1e-5)  # the front view did not change
    t = clip.encode_texts(["a dog"])[0]
    assert m2["clip_f_text"] == pytest.approx(float(e[0] @ t), abs=1e-5)
    assert "clip_o_img" not in clip4d.clip4d_metrics(clip, static)  # no reference: not computed
