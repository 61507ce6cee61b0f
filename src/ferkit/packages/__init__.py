"""Model packages, the torch-free run-time side: an ONNX graph plus the card that says how to feed it.

Ensemble packages (a card listing member packages copied under ``members/``) are read by
:mod:`ferkit.packages.ensemble`. Everything here runs with the core install (no torch), which is why packages live
apart from :mod:`ferkit.models` (architectures, the training side).
"""

from ferkit.packages.package import (
    CARD_NAME,
    GRAPH_NAME,
    KINDS,
    TORCH_WEIGHTS_NAME,
    WEIGHTS_DIR,
    ModelCard,
    PackageError,
    card_kind,
    parse_architecture,
    read_card,
    read_raw_card,
    resolve_folder,
    resolve_package,
    shipped_models,
    write_card,
)
from ferkit.packages.ensemble import EnsembleCard, member_folder, read_ensemble_card

__all__ = ["CARD_NAME", "GRAPH_NAME", "KINDS", "TORCH_WEIGHTS_NAME", "WEIGHTS_DIR", "EnsembleCard", "ModelCard",
           "PackageError", "card_kind", "member_folder", "parse_architecture", "read_card", "read_ensemble_card",
           "read_raw_card", "resolve_folder", "resolve_package", "shipped_models", "write_card"]
