"""Model registry, heads, local pretrained weights, seed architectures and ONNX export.

Every registry entry is built at its smallest valid input, trained for one step and exported with fp32 parity
<= 1e-4. The largest backbones (SLOW) only get a build + forward check by default; set FERKIT_SLOW_TESTS=1 to give
them the full treatment too.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ferkit.models.autoencoder import CNNAutoencoder, encoder_features, fit_feature_classifier
from ferkit.models.export import check_parity, export_onnx
from ferkit.models.from_package import load_package_model
from ferkit.packages import GRAPH_NAME, ModelCard, PackageError, read_card
from ferkit.models.registry import available, build_model, min_input_size
from ferkit.models.resmasknet import MaskingBlock, ResMaskingBlock, ResMaskNet, mask_depths, stage_sides
from ferkit.models.small_cnn import SmallCNN
from ferkit.models.timm_zoo import ZOO, BackboneWithHead, Seed000Head

RUN_SLOW = os.environ.get("FERKIT_SLOW_TESTS") == "1"
SLOW = {"resnet101", "resnet152", "resnext101", "wide_resnet50", "wide_resnet101", "densenet161", "densenet169",
        "densenet201", "vgg13", "vgg16", "vgg19", "resmasknet", "inception_v3", "efficientnet_b2"}
LABELS7 = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
LABELS8 = LABELS7 + ["contempt"]


def _config(arch: str) -> tuple[int, list[str]]:
    """Alternate (1 channel, 7 classes) and (3 channels, 8 classes) across the registry so both are covered."""
    return (1, LABELS7) if available().index(arch) % 2 == 0 else (3, LABELS8)


def _calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    """Set BatchNorm running stats to the batch's, so eval-mode logits have sane magnitudes for the parity check
    (freshly initialised deep nets otherwise produce logits ~1e7 in eval mode, where 1e-4 is below fp32 resolution)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


def _tame_logits(model: nn.Module, x: torch.Tensor, num_classes: int, target: float = 5.0) -> None:
    """Scale the classifier so eval logits are at most ``target`` in size, like a trained model's.

    A freshly initialised deep net gives logits of ~50 on noise, where fp32 torch itself differs from an fp64 run
    by ~3e-4: a 1e-4 parity bound would then test float rounding, not the export. Scaling the final layer scales
    the logits (and that rounding noise) exactly, and leaves the graph being tested unchanged.
    """
    last = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes
            or isinstance(m, nn.Conv2d) and m.out_channels == num_classes][-1]
    with torch.no_grad():
        peak = float(model(x).abs().max())
        if peak > target:
            last.weight.mul_(target / peak)
            if last.bias is not None:
                last.bias.mul_(target / peak)


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    if hasattr(model, "forward_with_aux"):
        logits, aux = model.forward_with_aux(x)
    else:
        logits, aux = model(x), 0.0
    loss = F.cross_entropy(logits, y) + aux
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    return float(loss.detach())


def _full_check(arch: str, tmp_path) -> None:
    torch.manual_seed(0)
    chans, labels = _config(arch)
    size = min_input_size(arch)
    model = build_model(arch, num_classes=len(labels), in_chans=chans, input_size=size)
    x = torch.randn(4, chans, size, size)
    _train_step(model, x, torch.randint(0, len(labels), (4,)))
    _calibrate_bn(model, torch.randn(8, chans, size, size))
    _tame_logits(model, torch.randn(8, chans, size, size), len(labels))
    card = ModelCard(name=arch, labels=labels, input_size=size, channels=chans, architecture=arch)
    path = export_onnx(model, card, tmp_path)
    assert path == tmp_path / GRAPH_NAME
    assert check_parity(model, path, n=3) <= 1e-4


FAST_ARCHS = [a for a in available() if a not in SLOW]


def test_registry_lists_the_papers_backbones_and_ferkits_own():
    assert set(ZOO) | {"small_cnn", "resmasknet", "cnn_autoencoder", "fervgg"} == set(available())
    assert SLOW <= set(available())
    assert ZOO["xception"].timm_name == "legacy_xception"


@pytest.mark.parametrize("arch", FAST_ARCHS)
def test_build_train_step_export(arch, tmp_path):
    _full_check(arch, tmp_path)


@pytest.mark.parametrize("arch", sorted(SLOW))
def test_big_models(arch, tmp_path):
    if RUN_SLOW:
        _full_check(arch, tmp_path)
        return
    chans, labels = _config(arch)
    size = min_input_size(arch)
    model = build_model(arch, num_classes=len(labels), in_chans=chans, input_size=size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, chans, size, size))
    assert out.shape == (2, len(labels))


@pytest.mark.parametrize("arch", available())
def test_below_min_input_size_is_a_clear_error(arch):
    size = min_input_size(arch)
    with pytest.raises(ValueError, match=f">= {size} px"):
        build_model(arch, num_classes=7, in_chans=1, input_size=size - 1)


def test_min_input_sizes():
    assert min_input_size("inception_v3") == 75
    assert min_input_size("resnet18") == 32
    assert min_input_size("small_cnn") == 20
    with pytest.raises(ValueError, match="unknown architecture"):
        min_input_size("resnet9000")


def test_seed000_head():
    model = build_model("mobilenetv2", num_classes=7, in_chans=1, input_size=32, head="seed000")
    assert isinstance(model, BackboneWithHead) and isinstance(model.head, Seed000Head)
    kinds = [type(m) for m in model.head]
    block = [nn.Linear, nn.ReLU, nn.Dropout, nn.BatchNorm1d]
    assert kinds == block * 3 + [nn.Linear]
    widths = [m.out_features for m in model.head if isinstance(m, nn.Linear)]
    assert widths == [1024, 512, 256, 7]
    assert model.head[0].in_features == 1280
    custom = build_model("vgg11", num_classes=8, in_chans=3, input_size=32, head="seed000",
                         head_widths=[64, 32, 16], head_dropout=0.1)
    assert [m.out_features for m in custom.head if isinstance(m, nn.Linear)] == [64, 32, 16, 8]
    assert custom.head[0].in_features == 4096  # VGG's pooled features come after its 4096-wide pre-logits
    assert custom.head[2].p == 0.1
    _train_step(model, torch.randn(4, 1, 32, 32), torch.randint(0, 7, (4,)))
    with pytest.raises(ValueError, match="head"):
        build_model("resnet18", num_classes=7, head="mlp")


def _fresh_state(timm_name: str, in_chans: int = 3) -> dict[str, torch.Tensor]:
    import timm

    return timm.create_model(timm_name, pretrained=False, in_chans=in_chans).state_dict()


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
@pytest.mark.parametrize("head", ["linear", "seed000"])
def test_pretrained_path_loads_backbone_and_adapts_first_conv(tmp_path, fmt, head):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    sd = _fresh_state("resnet18")  # ImageNet layout: 3 channels, 1000-way fc
    path = tmp_path / f"backbone.{fmt}"
    if fmt == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    model = build_model("resnet18", num_classes=7, in_chans=1, input_size=32, head=head, pretrained_path=str(path))
    got = (model.backbone if head == "seed000" else model).state_dict()
    for k, v in sd.items():
        if k.startswith("fc."):
            continue
        if k == "conv1.weight":  # RGB kernels summed into one gray kernel
            assert torch.allclose(got[k], v.sum(1, keepdim=True))
        else:
            assert torch.equal(got[k], v), k
    if head == "linear":
        assert got["fc.weight"].shape == (7, 512)
    colour = build_model("resnet18", num_classes=8, in_chans=3, input_size=32, pretrained_path=str(path))
    assert torch.equal(colour.state_dict()["conv1.weight"], sd["conv1.weight"])


def test_pretrained_path_rejects_a_file_of_another_architecture(tmp_path):
    from safetensors.torch import save_file

    save_file(_fresh_state("resnet34"), str(tmp_path / "r34.safetensors"))
    with pytest.raises(ValueError, match="does not fit"):
        build_model("resnet18", num_classes=7, pretrained_path=str(tmp_path / "r34.safetensors"))
    with pytest.raises(FileNotFoundError):
        build_model("resnet18", num_classes=7, pretrained_path=str(tmp_path / "missing.pth"))


def test_resmasknet_loads_a_resnet34_backbone(tmp_path):
    sd = _fresh_state("resnet34")
    torch.save(sd, tmp_path / "r34.pth")
    model = ResMaskNet(num_classes=7, in_chans=1, input_size=32, pretrained_path=str(tmp_path / "r34.pth"))
    assert torch.equal(model.stages[2].residual[0].conv1.weight, sd["layer3.0.conv1.weight"])
    assert torch.allclose(model.stem[0].weight, sd["conv1.weight"].sum(1, keepdim=True))


def test_resmasknet_block_is_f_r_plus_f_r_times_mask():
    from timm.models.resnet import BasicBlock

    torch.manual_seed(0)
    for activation in ("softmax", "sigmoid"):
        block = ResMaskingBlock(BasicBlock(8, 8), MaskingBlock(8, depth=3, activation=activation)).eval()
        x = torch.randn(2, 8, 7, 7)
        with torch.no_grad():
            f_r = block.residual(x)
            f_m = block.mask(f_r)
            out = block(x)
        assert f_m.shape == f_r.shape and f_m.min() >= 0 and f_m.max() <= 1
        assert torch.allclose(out, f_r + f_r * f_m)


def test_resmasknet_mask_depth_follows_feature_size():
    assert stage_sides(224) == [56, 28, 14, 7]
    assert mask_depths(224) == [4, 3, 2, 1]                         # the paper's configuration
    assert stage_sides(48) == [12, 6, 3, 2] and mask_depths(48) == [4, 3, 2, 1]
    assert mask_depths(32, (4, 4, 4, 4)) == [4, 3, 2, 1]            # 8/4/2/1 px maps cap the depth
    model = ResMaskNet(input_size=32, depths=(2, 2, 2, 2))
    assert model.depths == [2, 2, 2, 1]
    assert [len(s.mask.down) for s in model.stages] == [2, 2, 2, 1]


def test_resmasknet_size_matches_the_paper():
    with torch.device("meta"):
        model = ResMaskNet(num_classes=7, in_chans=3, input_size=224)
    unique = sum(p.numel() for p in model.parameters())
    # The released code registers each mask's 1x1 shortcut (conv + BN) twice; its state_dict count is Table II's.
    shortcuts = sum(p.numel() for s in model.stages for m in s.mask.modules()
                    if getattr(m, "downsample", None) is not None for p in m.downsample.parameters())
    assert abs(unique + shortcuts - 142.9e6) < 0.05e6


def test_autoencoder_aux_loss_is_lambda_mse():
    torch.manual_seed(0)
    model = build_model("cnn_autoencoder", num_classes=7, in_chans=1, input_size=48, lam=0.5).eval()
    assert model.latent_dim == 686 and model.to_latent.in_features == 256 * 3 * 3
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        logits, aux = model.forward_with_aux(x)
        h, pools = model._encode(x)
        recon = model.decode(h, pools)
        assert torch.equal(logits, model(x))
    assert recon.shape == x.shape
    assert torch.allclose(aux, 0.5 * F.mse_loss(recon, x))
    odd = CNNAutoencoder(num_classes=8, in_chans=3, input_size=40)  # 40 -> 20 -> 10 -> 5 -> 2 and back
    with torch.no_grad():
        h, pools = odd._encode(torch.randn(2, 3, 40, 40))
        assert odd.decode(h, pools).shape == (2, 3, 40, 40)


def test_autoencoder_reduce_mode_keeps_labels_out_of_the_encoder():
    model = CNNAutoencoder(num_classes=7, input_size=32, mode="reduce")
    assert model.latent_dim == 500
    logits, _ = model.forward_with_aux(torch.randn(4, 1, 32, 32))
    F.cross_entropy(logits, torch.randint(0, 7, (4,))).backward()
    assert all(p.grad is None for p in model.enc_stages.parameters())
    assert all(p.grad is not None for p in model.classifier.parameters())


def test_autoencoder_features_fit_sklearn():
    torch.manual_seed(0)
    model = CNNAutoencoder(num_classes=3, input_size=16, latent_dim=20)
    x = torch.randn(30, 1, 16, 16)
    y = np.arange(30) % 3
    feats = encoder_features(model, x, batch_size=8)
    assert feats.shape == (30, 20) and feats.dtype == np.float32
    clf = fit_feature_classifier(model, x, torch.as_tensor(y), batch_size=8)
    assert clf.predict(encoder_features(model, x)).shape == (30,)
    assert model.training  # restored


def test_small_cnn_matches_the_thesis_parameter_count():
    assert sum(p.numel() for p in SmallCNN(num_classes=8, in_chans=3, input_size=32).parameters()) == 367_304


def test_export_package_contract(tmp_path):
    import onnx
    import onnxruntime as ort

    model = build_model("small_cnn", num_classes=7, in_chans=1, input_size=32)
    model.train()
    card = ModelCard(name="tiny", labels=LABELS7, input_size=32, channels=1, architecture="small_cnn")
    path = export_onnx(model, card, tmp_path / "pkg")
    assert model.training  # the caller's mode is left alone
    assert sorted(p.name for p in (tmp_path / "pkg").iterdir()) == ["card.json", "model.onnx", "weights.safetensors"]
    back = read_card(tmp_path / "pkg")
    assert back.labels == LABELS7 and back.parameters == sum(p.numel() for p in model.parameters())
    assert back.architecture == {"arch": "small_cnn", "args": {}}  # a string architecture is read as structured
    # the package's torch weights rebuild the model the graph was exported from
    rebuilt, _ = load_package_model(tmp_path / "pkg")
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model.eval()(x))
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 32, 32]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        assert sess.run(None, {"input": np.zeros((n, 1, 32, 32), np.float32)})[0].shape == (n, 7)
    assert check_parity(model, path, n=8) <= 1e-4
    with pytest.raises(PackageError, match="labels"):
        export_onnx(model, ModelCard(name="bad", labels=LABELS8, input_size=32), tmp_path / "bad")
