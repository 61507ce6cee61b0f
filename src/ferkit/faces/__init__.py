"""Faces: detect (pluggable backends) -> landmarks -> align (eye line horizontal) -> crop (policy) -> CLAHE.

    from ferkit.io import read_image
    from ferkit.faces import get_detector, crop_face

    image = read_image("group.jpg")
    for det in get_detector("auto").detect(image):
        face = crop_face(image, det, policy="eyes", size=224, channels="rgb", align=True, clahe=False)

Conventions (see ferkit.faces.detection): boxes are int (x, y, w, h) in original-image pixels, landmarks float
(x, y); "left_eye"/"right_eye" are the person's left and right.
"""

from ferkit.faces.align import Region, align_face, box_region, eye_angle, eyes_region, region_matrix, transform_points
from ferkit.faces.crop import (
    CROP_POLICIES,
    crop_face,
    crop_faces,
    crop_matrix,
    crop_policy_used,
    crop_region,
    detect_and_crop,
    landmarks_in_crop,
)
# the backends register themselves
from ferkit.faces import backend_dlib, backend_haar, backend_mediapipe, backend_mtcnn  # noqa: F401
from ferkit.faces.detection import Detection
from ferkit.faces.enhance import apply_clahe
from ferkit.faces.files import detect_file
from ferkit.faces.registry import (
    AUTO_ORDER,
    Detector,
    DetectorUnavailable,
    auto_choice,
    available_detectors,
    detector_names,
    get_detector,
    register_detector,
)

__all__ = [
    "AUTO_ORDER", "CROP_POLICIES", "Detection", "Detector", "DetectorUnavailable", "Region", "align_face",
    "apply_clahe", "auto_choice", "available_detectors", "box_region", "crop_face", "crop_faces", "crop_matrix",
    "crop_policy_used", "crop_region", "detect_and_crop", "detect_file", "detector_names", "eye_angle",
    "eyes_region", "get_detector", "landmarks_in_crop", "region_matrix", "register_detector", "transform_points",
]
