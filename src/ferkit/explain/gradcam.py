"""Grad-CAM per detected face, mapped back through the crop onto the whole photo (pytorch-grad-cam).

For each face and each member model: the face is cropped as that model's card says (policy, margin, eye-line
rotation, size, channels, CLAHE), the crop goes through the torch model, and Grad-CAM weighs the activations of the
architecture's target layer (``ferkit.models.cam_layer``) by the gradients of the explained class's logit. The CAM,
in crop pixels, is warped back into the photo with the inverse of the crop's own affine map
(:func:`ferkit.faces.crop.crop_matrix`), so a rotated (aligned) crop's heat lands rotated on the face, and is zero
outside the crop. An ensemble's face heat is the weighted average of its members' CAMs (members whose labels lack
the class are left out, and said so); its probabilities are the weighted average of the members' by label name.

Each CAM is scaled to [0, 1] per face (pytorch-grad-cam's normalisation), so heat shows *where* a model looked for
this face, not how sure it was: the probability says that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ferkit.calibration import apply as apply_calibration
from ferkit.errors import UserInputError
from ferkit.explain.members import Member, load_members
from ferkit.explain.overlay import blend, outline, with_caption
from ferkit.faces import crop_face, get_detector
from ferkit.faces.crop import crop_matrix, crop_region
from ferkit.faces.detection import Detection
from ferkit.io import colour_mode, decode_image
from ferkit.labels import canonical
from ferkit.recognizer import to_original
from ferkit.runtime import ModelRuntime

MAX_SIDE = 2048
"""Photos are explained on a working copy of at most this many pixels on the longer side (as ``analyze`` does)."""


@dataclass
class Heat:
    """Heat over one face's crop only: ``patch`` (float32 in [0, 1]) placed at (``x``, ``y``) in the working image.
    Why a patch: a face's crop is a small part of a photo, so heat per face and member stays the size of the face,
    not of the photo (a 2048 px photo with 20 faces would otherwise hold 20 full-size maps per member)."""

    x: int
    y: int
    patch: np.ndarray

    def paste(self, canvas: np.ndarray) -> None:
        """Draw into ``canvas`` (the working image's shape), keeping the larger value where heat overlaps."""
        h, w = self.patch.shape
        np.maximum(canvas[self.y:self.y + h, self.x:self.x + w], self.patch,
                   out=canvas[self.y:self.y + h, self.x:self.x + w])

    def full(self, shape: tuple[int, ...]) -> np.ndarray:
        canvas = np.zeros(shape[:2], np.float32)
        self.paste(canvas)
        return canvas

    @staticmethod
    def weighted(parts: list[tuple[float, Heat]]) -> Heat:
        """The weighted sum of heats (weights summing to 1), over the rectangle that holds them all."""
        x0, y0 = min(h.x for _, h in parts), min(h.y for _, h in parts)
        x1 = max(h.x + h.patch.shape[1] for _, h in parts)
        y1 = max(h.y + h.patch.shape[0] for _, h in parts)
        out = np.zeros((y1 - y0, x1 - x0), np.float32)
        for weight, h in parts:
            ph, pw = h.patch.shape
            out[h.y - y0:h.y - y0 + ph, h.x - x0:h.x - x0 + pw] += weight * h.patch
        return Heat(x0, y0, out)


@dataclass
class FaceExplanation:
    """One face: where it is, which class was explained, how likely the model(s) found it, and its heat."""

    box: tuple[int, int, int, int]
    """x, y, w, h in original-image pixels (as in ``ferkit analyze``)."""
    target: str
    probability: float
    """The explained class's probability (an ensemble's: the weighted average of its members')."""
    predicted: str
    scores: dict[str, float]
    members: list[dict[str, Any]]
    """Per member: name, weight, its probability for the class, whether it has that class (and so a CAM)."""
    regions: list[np.ndarray]
    """Each member's crop as 4x2 corners in working-image pixels: where its heat can be."""
    shape: tuple[int, ...]
    """The working image's shape."""
    heat_patch: Heat | None = field(default=None, repr=False)
    """The (weighted average) heat over this face's crops; None when no member has the class."""
    member_patches: dict[str, Heat] = field(default_factory=dict, repr=False)

    @property
    def heat(self) -> np.ndarray:
        """HxW float32 in [0, 1] over the working image, zero outside the crops."""
        return self.heat_patch.full(self.shape) if self.heat_patch else np.zeros(self.shape[:2], np.float32)

    @property
    def member_heat(self) -> dict[str, np.ndarray]:
        """Each member's heat for this face, as full-size maps like :attr:`heat`."""
        return {name: h.full(self.shape) for name, h in self.member_patches.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "target": self.target, "probability": round(self.probability, 4),
                "predicted": self.predicted, "scores": {k: round(v, 4) for k, v in self.scores.items()},
                "members": self.members}


@dataclass
class Explanation:
    """Grad-CAM of every face of one photo. ``image`` is the working image (the photo, reduced to at most
    2048 px on its longer side); ``scale`` maps original pixels onto it."""

    source: str
    model: str
    width: int
    height: int
    scale: float
    image: np.ndarray = field(repr=False)
    faces: list[FaceExplanation]
    members: list[str]

    @property
    def heat(self) -> np.ndarray:
        """The heat of every face (their maximum where crops overlap), HxW float32 over the working image."""
        heat = np.zeros(self.image.shape[:2], np.float32)
        for face in self.faces:
            if face.heat_patch is not None:
                face.heat_patch.paste(heat)
        return heat

    def member_heat(self, member: str) -> np.ndarray:
        heat = np.zeros(self.image.shape[:2], np.float32)
        for face in self.faces:
            if member in face.member_patches:
                face.member_patches[member].paste(heat)
        return heat

    def overlay(self, member: str | None = None, caption: bool = True) -> np.ndarray:
        """The photo with the heat blended in, each crop outlined, and (``caption``) one line per face below it;
        ``member``: that ensemble member's CAMs instead of the average."""
        heat = self.heat if member is None else self.member_heat(member)
        out = blend(self.image, heat)
        outline(out, [r for f in self.faces for r in f.regions])
        if not caption:
            return out
        who = self.model if member is None else f"{self.model} / {member}"
        lines = [f"Grad-CAM, {who}: " + (f"{len(self.faces)} face(s), largest first" if self.faces else "no faces")]
        lines += [f"face {i}: {f.target} {f.probability:.2f} (predicted {f.predicted})"
                  for i, f in enumerate(self.faces)]
        return with_caption(out, lines)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "model": self.model, "members": self.members, "width": self.width,
                "height": self.height, "faces": [f.to_dict() for f in self.faces]}


class Explainer:
    """Grad-CAM for the faces of photos with one model package or ensemble (loaded once, reused per photo).

    model: a shipped name or a package / ensemble folder; its packages need ``weights.safetensors``.
    detector: as in :class:`ferkit.Recognizer`. target: a label name (aliases work: 'happiness') to explain for
    every face, or None for each face's predicted class. min_face / max_faces: as in ``ferkit analyze``.
    """

    def __init__(self, model: str | os.PathLike = "default", detector: str | object = "auto",
                 target: str | None = None, min_face: int = 0, max_faces: int | None = None) -> None:
        from pytorch_grad_cam import GradCAM

        self.name, self.members = load_members(model)
        self.labels = _union(m.card.labels for m in self.members)
        self.target = None if target is None else canonical(target)
        if self.target is not None and self.target not in self.labels:
            raise UserInputError(f"--class {target}: {self.name} has no such class; its classes: "
                                 f"{', '.join(self.labels)}")
        self.detector = get_detector(detector)
        self.min_face, self.max_faces = min_face, max_faces
        self._runtimes = [ModelRuntime(m.folder) for m in self.members]
        self._cams = [GradCAM(m.model, [m.target_layer]) for m in self.members]

    def explain(self, source: str | os.PathLike | np.ndarray) -> Explanation:
        """Grad-CAM of every face in one photo (path or uint8 RGB array); ImageError for an unreadable file."""
        if isinstance(source, np.ndarray):
            image, scale, (height, width), name = source, 1.0, source.shape[:2], "<array>"
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        else:
            decoded = decode_image(source, "rgb", MAX_SIDE)
            image, scale, width, height, name = decoded.pixels, decoded.scale, decoded.width, decoded.height, str(source)
        found = [d for d in self.detector.detect(image)
                 if min(to_original(d, scale, width, height).box[2:]) >= self.min_face]
        if self.max_faces is not None:
            found = found[: self.max_faces]
        faces = self._explain_faces(image, found, scale, width, height)
        return Explanation(name, self.name, width, height, scale, image, faces, [m.name for m in self.members])

    def _explain_faces(self, image: np.ndarray, found: list[Detection], scale: float, width: int,
                       height: int) -> list[FaceExplanation]:
        if not found:
            return []
        import torch
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        inputs, probs = [], []
        for member, runtime in zip(self.members, self._runtimes):
            card = member.card
            crops = [crop_face(image, d, card.crop_policy, card.input_size, colour_mode(card.channels), card.align,
                               margin=card.crop_margin) for d in found]
            x = torch.from_numpy(runtime.preprocess(crops))
            with torch.no_grad():
                raw = torch.softmax(member.model(x), 1).numpy()
            # the scores a face gets from `ferkit analyze --tta none`: calibrated as the member's card says
            probs.append(apply_calibration(raw, card.calibration, "none", card.labels))
            inputs.append(x)
        faces = []
        for i, det in enumerate(found):
            scores = self._combine([dict(zip(m.card.labels, map(float, p[i]))) for m, p in zip(self.members, probs)])
            predicted = max(scores, key=scores.get)
            faces.append(FaceExplanation(to_original(det, scale, width, height).box, self.target or predicted,
                                         scores[self.target or predicted], predicted, scores, [], [], image.shape))
        for member, cam, x, p in zip(self.members, self._cams, inputs, probs):
            card = member.card
            has = [f.target in card.labels for f in faces]
            idx = [i for i, h in enumerate(has) if h]
            maps = cam(x[idx], [ClassifierOutputTarget(card.labels.index(faces[i].target)) for i in idx]) if idx else []
            regions = [crop_region(d, card.crop_policy, card.align, card.crop_margin).corners() for d in found]
            for k, i in enumerate(idx):
                faces[i].member_patches[member.name] = _to_image(maps[k], found[i], card, regions[i], image.shape)
            for i, face in enumerate(faces):
                face.regions.append(regions[i])
                face.members.append({"name": member.name, "weight": member.weight, "has_class": has[i],
                                     "probability": round(float(p[i][card.labels.index(face.target)]), 4)
                                     if has[i] else None})
        for face in faces:
            used = [m for m in self.members if m.name in face.member_patches]
            total = sum(m.weight for m in used)
            if used:
                face.heat_patch = Heat.weighted([(m.weight / total, face.member_patches[m.name]) for m in used])
        return faces

    def _combine(self, per_member: list[dict[str, float]]) -> dict[str, float]:
        """Weighted average by label name over the members that have each label (one member: its own scores)."""
        out = {}
        for label in self.labels:
            pairs = [(m.weight, s[label]) for m, s in zip(self.members, per_member) if label in s]
            out[label] = sum(w * v for w, v in pairs) / sum(w for w, _ in pairs)
        total = sum(out.values())
        return {k: v / total for k, v in out.items()}


def _to_image(cam: np.ndarray, detection: Detection, card, region: np.ndarray, shape) -> Heat:
    """A CAM in crop pixels warped into the image through the inverse of the crop's affine map (rotation
    included), over the crop's bounding rectangle, and cut to the crop itself (bilinear sampling would smear it a
    crop pixel beyond)."""
    x0, y0 = (max(0, int(np.floor(v))) for v in region.min(axis=0))
    x1, y1 = min(shape[1], int(np.ceil(region[:, 0].max())) + 1), min(shape[0], int(np.ceil(region[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return Heat(0, 0, np.zeros((0, 0), np.float32))
    m = crop_matrix(detection, card.crop_policy, card.input_size, card.align, card.crop_margin)
    m = np.hstack([m[:, :2], (m[:, 2] + m[:, :2] @ np.array([x0, y0], float))[:, None]])  # patch -> crop pixels
    heat = cv2.warpAffine(np.ascontiguousarray(cam, np.float32), m, (x1 - x0, y1 - y0),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = np.zeros(heat.shape, np.uint8)
    cv2.fillPoly(inside, [np.round(region - [x0, y0]).astype(np.int32)], 1)
    return Heat(x0, y0, np.clip(heat, 0, 1) * inside)


def _union(label_lists) -> list[str]:
    out: list[str] = []
    for labels in label_lists:
        out += [lab for lab in labels if lab not in out]
    return out


def explain(image: str | os.PathLike | np.ndarray, model: str | os.PathLike = "default",
            target: str | None = None, detector: str | object = "auto") -> Explanation:
    """Grad-CAM of every face in ``image`` for ``target`` (a label name; None: each face's predicted class).

    ``model``: a shipped name, a package folder or an ensemble folder (per-member CAMs and their weighted average).
    ``result.overlay()`` is the photo with the heat drawn in; ``result.faces`` holds each face's box, class,
    probability and heat. Needs the ``explain`` extra. For many photos, make one :class:`Explainer` and reuse it.
    """
    return Explainer(model, detector, target).explain(image)


__all__ = ["Explainer", "Explanation", "FaceExplanation", "Heat", "Member", "explain"]
