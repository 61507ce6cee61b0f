"""Training throughput (img/s, fp32 vs bf16 autocast) and parameter count per architecture -> results/train_speed.json.

    python benchmarks/train_speed.py                 # every registered architecture (takes a while on 2 cores)
    python benchmarks/train_speed.py --arch fervgg --arch resnet18

A step is forward + backward + SGD update on a batch of random 48x48 gray inputs (inception_v3 needs 75x75); the
batch augmentation of real training adds a few percent. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ferkit.models.registry import available, build_model

HERE = Path(__file__).resolve().parent
DEFAULT_ARGS = {"fervgg": {"widths": [32, 96, 192, 384]}}  # the shipped default model's shape
MIN_INPUT = {"inception_v3": 75}


def throughput(arch: str, precision: str, batch: int, steps: int, size: int) -> tuple[float, int]:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, in_chans=1, input_size=size, **DEFAULT_ARGS.get(arch, {}))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 1, size, size)
    y = torch.randint(0, 7, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t), sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "train_speed.json")
    args = ap.parse_args()
    rows = []
    for arch in args.arch or available():
        size = MIN_INPUT.get(arch, 48)
        fp32, params = throughput(arch, "fp32", args.batch, args.steps, size)
        bf16, _ = throughput(arch, "bf16", args.batch, args.steps, size)
        rows.append({"arch": arch, "parameters": params, "input": f"{size}x{size}x1", "fp32_img_s": round(fp32, 1),
                     "bf16_img_s": round(bf16, 1)})
        print(f"{arch}: {params / 1e6:.2f}M params, fp32 {fp32:.0f} img/s, bf16 {bf16:.0f} img/s", flush=True)
    setup = (f"batch {args.batch}, {args.steps} timed steps after one warm-up, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python benchmarks/train_speed.py", *sys.argv[1:]])
    args.out.write_text(json.dumps({"command": command, "setup": setup, "rows": rows},
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
