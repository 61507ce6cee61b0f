"""Seed 001's CNN autoencoder (An, Liu, Zheng): encoder E, decoder D, classifier C on the latent h = E(x).

Two uses, as in the paper:

(a) multitask regulariser (section 4.2.2, ``mode="multitask"``, the paper's better model, 65.9% on FER2013):
    L = CE(y, C(h)) + lambda * MSE(x, D(h)). ``forward_with_aux(x)`` returns ``(logits, lambda * MSE)`` and the
    training loop adds the second term to its cross-entropy; plain ``forward`` returns logits only, so the
    exported graph never contains the decoder.
(b) dimensionality reduction (section 4.2.1): E and D learn from reconstruction alone and C learns on h. With
    ``mode="reduce"`` the classifier sees ``h.detach()``, so one training run does both stages at once (the
    encoder gets no gradient from the labels). Alternatively fit scikit-learn on the encoder's features::

        feats = encoder_features(model, x_train)                  # (N, latent_dim) numpy
        clf = fit_feature_classifier(model, x_train, y_train)     # StandardScaler + LogisticRegression
        pred = clf.predict(encoder_features(model, x_test))

Architecture, Tables 2-4 (for 48x48 input):
- E: 4 x [conv3x3+BN+ReLU, conv3x3+BN+ReLU] with 32, 64, 128, 256 channels, 2x2 max-pool after each pair, then
  Linear(256*3*3 -> latent_dim) without activation;
- D: Linear(latent_dim -> 256*3*3), then transposed 3x3 convs (+BN+ReLU) and 2x2 max-unpooling with the encoder's
  pooling indices: 256->256, unpool, 256->128, unpool, 128->128, 128->64, unpool, 64->64, 64->32, unpool,
  32->32, 32->in_chans (no BN, no activation: the output is compared with the normalised input);
- C: Linear(latent_dim -> 512) + ReLU, Dropout(0.5), Linear(512 -> classes).

Deviations, each forced by the text:
- Table 2 lists only three max-pools, yet its Linear takes 256*3*3 inputs (48 / 2^4 = 3) and Table 3 unpools four
  times, with channel counts (256, 128, 64, 32) that match a pool after each of the four conv pairs; so E pools
  four times. The latent side is ``input_size // 16``, making any size >= 16 px work.
- Table 4 ends in a Sigmoid (with the binary-cross-entropy-like Eq. 2); ferkit's loop applies a softmax
  cross-entropy to logits, so C outputs logits and the sigmoid is dropped.
- Eq. 1 is a squared Frobenius norm, Eq. 5 divides by n: the loss is the per-element mean squared error.
- latent_dim defaults to 686 for ``multitask`` (the paper's best) and 500 for ``reduce`` (section 5.2.1); lambda
  is not given in the paper, the default 1.0 weighs both terms equally.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ferkit.models.registry import register

WIDTHS = (32, 64, 128, 256)


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _deconv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class CNNAutoencoder(nn.Module):
    """Encoder, decoder and classifier of seed 001 (Tables 2-4); see the module docstring."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1, input_size: int = 48, mode: str = "multitask",
                 latent_dim: int | None = None, lam: float = 1.0, hidden: int = 512, dropout: float = 0.5,
                 widths: Sequence[int] = WIDTHS) -> None:
        super().__init__()
        if mode not in ("multitask", "reduce"):
            raise ValueError(f"mode must be 'multitask' or 'reduce', not {mode!r}")
        self.side = input_size // 2 ** len(widths)
        if self.side < 1:
            raise ValueError(f"input_size {input_size} is too small for {len(widths)} pooling stages (>= 16)")
        self.mode, self.lam = mode, lam
        self.latent_dim = latent_dim or (686 if mode == "multitask" else 500)
        c_last = widths[-1]
        self.enc_stages = nn.ModuleList()
        c = in_chans
        for w in widths:
            self.enc_stages.append(nn.Sequential(*_conv(c, w), *_conv(w, w)))
            c = w
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.to_latent = nn.Linear(c_last * self.side * self.side, self.latent_dim)

        self.from_latent = nn.Linear(self.latent_dim, c_last * self.side * self.side)
        # Table 3: one deconv before the first (deepest) unpool, then two per level, the last one to the image.
        dec = [_deconv(c_last, c_last)]
        rev = list(widths[::-1]) + [in_chans]         # 256, 128, 64, 32, in_chans
        for i in range(len(widths)):
            c_hi, c_lo = rev[i], rev[i + 1]
            if i == 0:
                dec.append(_deconv(c_hi, c_lo))       # 256 -> 128 right after the first unpool
            elif i < len(widths) - 1:
                dec.append(nn.Sequential(_deconv(c_hi, c_hi), _deconv(c_hi, c_lo)))
            else:
                dec.append(nn.Sequential(_deconv(c_hi, c_hi), nn.ConvTranspose2d(c_hi, c_lo, 3, padding=1)))
        self.dec_stages = nn.ModuleList(dec)
        self.unpool = nn.MaxUnpool2d(2)

        self.classifier = nn.Sequential(nn.Linear(self.latent_dim, hidden), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Size]]]:
        pools = []
        for stage in self.enc_stages:
            x = stage(x)
            size = x.shape[-2:]
            x, idx = self.pool(x)
            pools.append((idx, size))
        return self.to_latent(x.flatten(1)), pools

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent representation h = E(x), shape (N, latent_dim)."""
        return self._encode(x)[0]

    def decode(self, h: torch.Tensor, pools: list[tuple[torch.Tensor, torch.Size]]) -> torch.Tensor:
        """Reconstruction D(h); max-unpooling puts values back where the encoder's max-pools found them."""
        x = self.from_latent(h).view(h.shape[0], -1, self.side, self.side)
        x = self.dec_stages[0](x)
        for stage, (idx, size) in zip(self.dec_stages[1:], reversed(pools)):
            x = stage(self.unpool(x, idx, output_size=size))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encode(x))

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, lam * MSE(D(E(x)), x))``: the training loop adds the second term to its cross-entropy."""
        h, pools = self._encode(x)
        recon = self.decode(h, pools)
        logits = self.classifier(h.detach() if self.mode == "reduce" else h)
        return logits, self.lam * F.mse_loss(recon.float(), x.float())


@torch.no_grad()
def encoder_features(model: CNNAutoencoder, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Latent features E(x) for a batch of normalised images (N, C, H, W), in eval mode, as float32 numpy."""
    was_training = model.training
    model.eval()
    try:
        out = [model.encode(images[i:i + batch_size].float()).cpu() for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy().astype(np.float32)


def fit_feature_classifier(model: CNNAutoencoder, images: torch.Tensor, targets: torch.Tensor | np.ndarray,
                           estimator: object | None = None, batch_size: int = 256) -> object:
    """Fit a scikit-learn classifier on the encoder's features (the paper's dimensionality-reduction route).

    ``estimator`` is any scikit-learn classifier (default: StandardScaler + LogisticRegression); predict with
    ``estimator.predict(encoder_features(model, new_images))``.
    """
    if estimator is None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    y = targets.cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    estimator.fit(encoder_features(model, images, batch_size), y)  # type: ignore[attr-defined]
    return estimator


# the encoder's last conv pair, before its pooling: 6x6 at 48 px
register("cnn_autoencoder", cam_layer=lambda m: m.enc_stages[-1], min_input=16)(CNNAutoencoder)
