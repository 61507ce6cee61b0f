"""Field types shared by training recipes: strict scalars with ranges, so every recipe value is checked by name.

Why strict: YAML turns ``batch_size: "32"`` into text and ``hflip: yes`` into ``True``; a lax parser would train
with them (or crash an hour later inside torch). Integers are accepted where a float is meant (``lr: 1``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

RECIPE = ConfigDict(extra="forbid")
"""Every recipe section rejects unknown keys: a typo ("lr_shedule") must fail at load, not train with a default."""

Flag = Annotated[bool, Field(strict=True)]
Text = Annotated[str, Field(strict=True, min_length=1)]
Count = Annotated[int, Field(strict=True, ge=1)]
"""A positive whole number (epochs, batch sizes, image sides, sample limits)."""
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
Seed = Annotated[int, Field(strict=True, ge=0)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
NonNeg = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(strict=True, ge=0, le=1)]
"""A probability or a share, within [0, 1]."""
