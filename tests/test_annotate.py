"""Annotated images: every label inside the picture, off the other faces where there is room, text that grows with
the photo. Real group photos with real detections, plus a crowd composed from a real photo's faces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ferkit.annotate import FONT, PAD, _candidates, _overlap, annotate, layout, text_style
from ferkit.io import read_image
from ferkit.results import Face, ImageResult
from tests.conftest import PHOTOS, need

GROUP_PHOTOS = ["dlib__2008_002470.jpg", "dlib__2008_001322.jpg", "dlib__2008_001009.jpg", "dlib__2008_002079.jpg"]


@pytest.fixture(scope="module")
def recognizer():
    from ferkit import Recognizer

    return Recognizer(workers=1)


def _layout(image: np.ndarray, result: ImageResult) -> tuple[list, list, list]:
    plan = layout(image.shape, result)
    return plan.boxes, plan.labels, [(x1 - x0, y1 - y0) for x0, y0, x1, y1 in plan.labels]


def _free_spot_exists(i: int, boxes, sizes, shape) -> bool:
    """Whether some candidate spot for label i, clamped into the image, touches no other face."""
    lw, lh = sizes[i]
    for x, y in _candidates(boxes[i], lw, lh):
        x = min(max(x, 0), shape[1] - lw)
        y = min(max(y, 0), shape[0] - lh)
        if all(_overlap((x, y, x + lw, y + lh), b) == 0 for j, b in enumerate(boxes) if j != i):
            return True
    return False


def _check(image, boxes, labels, sizes):
    h, w = image.shape[:2]
    for i, (x0, y0, x1, y1) in enumerate(labels):
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, f"label {i} {labels[i]} outside the {w}x{h} image"
        if _free_spot_exists(i, boxes, sizes, image.shape):
            hit = [j for j, b in enumerate(boxes) if j != i and _overlap(labels[i], b)]
            assert not hit, f"label {i} covers faces {hit} although a free spot exists"


@pytest.mark.parametrize("name", GROUP_PHOTOS)
def test_labels_inside_and_off_other_faces_on_real_group_photos(recognizer, name):
    image = read_image(need(PHOTOS / name))
    result = recognizer.analyze(image)
    assert len(result.faces) >= 2
    boxes, labels, sizes = _layout(image, result)
    _check(image, boxes, labels, sizes)
    for i, a in enumerate(labels):  # and labels do not cover each other here (these photos have room)
        assert not any(_overlap(a, b) for b in labels[i + 1:])
    drawn = annotate(image, result)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)


def test_crowd_at_the_edges_keeps_labels_inside_and_off_neighbours(recognizer):
    """A crowd composed from a real photo's faces: a row along the top edge (no room above), a row touching it
    below, faces flush with the left and right edges."""
    image = read_image(need(PHOTOS / "dlib__2008_001322.jpg"))
    faces = recognizer.analyze(image).faces
    x, y, w, h = faces[0].box
    tile = cv2.resize(image[y:y + h, x:x + w], (90, 90))
    crowd = np.full((300, 720, 3), 200, np.uint8)
    result = ImageResult("crowd", 720, 300, [])
    for row, top in enumerate((0, 90)):
        for col in range(8):
            crowd[top:top + 90, col * 90:(col + 1) * 90] = tile
            result.faces.append(Face((col * 90, top, 90, 90), faces[(row + col) % len(faces)].scores))
    boxes, labels, sizes = _layout(crowd, result)
    _check(crowd, boxes, labels, sizes)
    top_row = labels[:8]
    assert all(r[1] >= 0 for r in top_row)
    bottom_row = labels[8:]  # room below the second row: its labels go there, not onto the first row's faces
    assert all(r[1] >= 180 for r in bottom_row), bottom_row


def test_text_grows_with_the_image_and_shrinks_to_fit_a_crop(recognizer):
    small, big = text_style((480, 640)), text_style((3000, 4000))
    assert big[0] > 4 * small[0] and big[1] > small[1]
    image = read_image(need(PHOTOS / "dlib__2008_001322.jpg"))
    face = recognizer.analyze(image).faces[0]
    x, y, w, h = face.box
    crop = np.ascontiguousarray(image[y:y + 48, x:x + 48])
    one = ImageResult("crop", 48, 48, [Face((4, 4, 40, 40), face.scores)])
    plan = layout(crop.shape, one)
    (tw, _), _ = cv2.getTextSize(plan.texts[0], FONT, plan.font_scale, plan.thickness)
    assert plan.font_scale < small[0] and tw + 2 * PAD <= 48  # the text fits across the crop, not cut at its edge
    x0, y0, x1, y1 = plan.labels[0]
    assert 0 <= x0 and x1 <= 48 and 0 <= y0 and y1 <= 48
    assert annotate(crop, one).shape == crop.shape


def test_a_reduced_copy_of_the_image_gets_the_boxes_scaled(recognizer):
    """Large files are decoded at a working size; annotate draws the original-pixel boxes onto that copy."""
    image = read_image(need(PHOTOS / "dlib__2008_002470.jpg"))
    result = recognizer.analyze(image)
    half = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    full, reduced = layout(image.shape, result), layout(half.shape, result)
    for (a0, b0, a1, b1), (c0, d0, c1, d1) in zip(full.boxes, reduced.boxes):
        assert max(abs(a0 / 2 - c0), abs(b0 / 2 - d0), abs(a1 / 2 - c1), abs(b1 / 2 - d1)) <= 1
    boxes, labels, sizes = reduced.boxes, reduced.labels, [(x1 - x0, y1 - y0) for x0, y0, x1, y1 in reduced.labels]
    _check(half, boxes, labels, sizes)
