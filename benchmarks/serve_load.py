"""Load on `ferkit serve` from another process on loopback -> results/serve_load.json + serve_load.md.

    python benchmarks/serve_load.py [--seconds 60] [--clients 1,8,32] [--photos DIR] [--model default]
                                    [--no-batching-at 8] [--out-json F] [--out-md F]

Starts `ferkit serve` in a subprocess on 127.0.0.1 (a free port), then for each client count runs that many
concurrent HTTP clients (asyncio + httpx in this process, each posting the photos round-robin as multipart
uploads, a new request as soon as the last is answered) for --seconds: requests/s, faces/s, latency p50/p95/p99,
errors (any non-200, timeout or connection error), and the server's peak RSS (VmHWM from /proc, so it only
grows). Every photo is posted once first, unmeasured (detector threads load on first use).

To show the server's overhead, the same photos go through the in-process ``Recognizer`` for --seconds each way:
one photo per call (what one client at a time gets) and lists of 16 (what the batcher gives concurrent clients).

With --no-batching-at N, N clients also run against a second server started with --max-batch 1, so the table shows
what the batcher is worth. Then `python benchmarks/render.py` puts results/serve_load.md into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from itertools import cycle
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "photos"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


class ServerProcess:
    """`ferkit serve --port 0` in a subprocess; the URL is read from uvicorn's startup line."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
        env.pop("FERKIT_API_KEY", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "ferkit.cli", "serve", "--port", "0", "--timeout", "120",
                                      *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.url = ""
        for line in self.proc.stdout:
            found = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
            if found:
                self.url = found.group(1)
                break
        if not self.url:
            raise SystemExit("ferkit serve did not start")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep the pipe from filling up

    def peak_rss_mb(self) -> float | None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        found = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(found.group(1)) / 1024 if found else None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def drive(url: str, photos: list[tuple[str, bytes]], clients: int, seconds: float) -> dict:
    """``clients`` concurrent loops posting photos for ``seconds``; latencies of the requests that finished in time."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    faces = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one_client(offset: int) -> None:
            nonlocal faces
            for name, data in cycle(photos[offset % len(photos):] + photos[:offset % len(photos)]):
                if time.perf_counter() >= deadline:
                    return
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/analyze", files={"file": (name, data)})
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                latencies.append(time.perf_counter() - t0)
                faces += len(r.json()["faces"])

        t_start = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        elapsed = time.perf_counter() - t_start
    return {"clients": clients, "seconds": round(elapsed, 2), "requests": len(latencies), "errors": len(errors),
            "error_examples": errors[:3], "requests_per_s": round(len(latencies) / elapsed, 2),
            "faces_per_s": round(faces / elapsed, 2),
            **{f"p{q}_ms": round(percentile(latencies, q) * 1000, 1) for q in (50, 95, 99)}}


def in_process(paths: list[Path], model: str, seconds: float) -> dict:
    """Requests/s of the Recognizer itself on the same photos: one per call, and lists of 16 per call."""
    from ferkit.recognizer import Recognizer

    recognizer = Recognizer(model)
    recognizer.analyze(paths)  # warm-up: detector threads and ONNX session
    out = {}
    for label, chunk in (("single", 1), ("list16", 16)):
        done, t0 = 0, time.perf_counter()
        feed = cycle(paths)
        while time.perf_counter() - t0 < seconds:
            batch = [next(feed) for _ in range(chunk)]
            recognizer.analyze(batch if chunk > 1 else batch[0])
            done += len(batch)
        out[f"{label}_per_s"] = round(done / (time.perf_counter() - t0), 2)
    return out


def render_md(report: dict) -> str:
    base = report["in_process"]
    lines = ["## `ferkit serve` under load", "",
             f"Measured with `{report['command']}`: {report['setup']}", "",
             "| server | clients | requests/s | vs in-process | faces/s | p50 ms | p95 ms | p99 ms | errors | "
             "images per model call | server peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        ref = base["single_per_s"] if r["clients"] == 1 else base["list16_per_s"]
        lines.append(f"| {r['server']} | {r['clients']} | {r['requests_per_s']:.2f} | {r['requests_per_s'] / ref:.2f}x | "
                     f"{r['faces_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{r['errors']} | {r.get('images_per_model_call') or '-'} | {r['peak_rss_mb'] or float('nan'):.0f} |")
    lines += ["", f"In-process `Recognizer` on the same photos: {base['single_per_s']:.2f} photos/s one per call "
              f"(the reference for 1 client), {base['list16_per_s']:.2f} photos/s in lists of 16 (the reference for "
              "concurrent clients, whose photos the batcher groups the same way). \"vs in-process\" = server "
              "requests/s / that reference, so 1 - it is the cost of HTTP, multipart and JSON. \"images per model call\" is "
              "how many requests' images the batcher ran through `Recognizer.analyze` together (the server's "
              "ferkit_batch_images histogram); with --max-batch 1 it is 1 by construction, and the Recognizer then "
              "detects one image at a time instead of one per core.", ""]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict:
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    paths = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"no photos in {args.photos}")
    photos = [(p.name, p.read_bytes()) for p in paths]
    rows = []
    plans = [("batched", ["--max-batch", "16"], [int(c) for c in args.clients.split(",")])]
    if args.no_batching_at:
        plans.append(("no batching (--max-batch 1)", ["--max-batch", "1"], [args.no_batching_at]))
    for label, extra, levels in plans:
        server = ServerProcess("--model", args.model, *extra)
        try:
            for name, data in photos:  # warm-up, unmeasured
                await drive_one(server.url, name, data)
            for clients in levels:
                print(f"{label}: {clients} clients for {args.seconds:g} s ...", file=sys.stderr, flush=True)
                before = await batch_counts(server.url)
                row = await drive(server.url, photos, clients, args.seconds)
                images, calls = (a - b for a, b in zip(await batch_counts(server.url), before))
                row.update(server=label, peak_rss_mb=server.peak_rss_mb(),
                           images_per_model_call=round(images / calls, 2) if calls else None)
                print(f"  {row['requests_per_s']} req/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                      f"errors {row['errors']}", file=sys.stderr, flush=True)
                rows.append(row)
        finally:
            server.stop()
    print("in-process Recognizer ...", file=sys.stderr, flush=True)
    base = in_process(paths, args.model, args.seconds)
    cpu = os.cpu_count()
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    load = ""
    if load_before is not None:
        load = f" 1-minute load average {load_before:.1f} before the run and {load_after:.1f} after it"
        busy = max(load_before, load_after) > (cpu or 1)
        load += (" (over the core count: other processes competed for the CPU, so the rows measure that too and "
                 "compare poorly)." if busy else ".")
    return {"command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
            "setup": f"{len(paths)} photos ({Path(args.photos).name}/), posted round-robin as multipart uploads by "
                     f"N concurrent httpx clients in a separate process on loopback, each sending its next request "
                     f"when the last is answered, {args.seconds:g} s per row; server `ferkit serve --model "
                     f"{args.model}` (dlib detector, flip TTA) on {cpu} CPU cores shared with the clients; "
                     f"{platform.python_implementation()} {platform.python_version()};" + load,
            "rows": rows, "in_process": base}


async def batch_counts(url: str) -> tuple[float, float]:
    """(images, model calls) so far, from the server's /metrics (ferkit_batch_images histogram)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        text = (await client.get("/metrics")).text
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return samples.get("ferkit_batch_images_sum", 0.0), samples.get("ferkit_batch_images_count", 0.0)


async def drive_one(url: str, name: str, data: bytes) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        (await client.post("/v1/analyze", files={"file": (name, data)})).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="Duration of each load level.")
    parser.add_argument("--clients", default="1,8,32", help="Comma-separated concurrent client counts.")
    parser.add_argument("--photos", default=str(DEFAULT_PHOTOS))
    parser.add_argument("--model", default="default")
    parser.add_argument("--no-batching-at", type=int, default=8,
                        help="Also run this many clients against a server with --max-batch 1 (0: skip).")
    parser.add_argument("--out-json", default=str(HERE / "results" / "serve_load.json"))
    parser.add_argument("--out-md", default=str(HERE / "results" / "serve_load.md"))
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    report = asyncio.run(main_async(args))
    from ferkit.io import atomic_write

    Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out_json, lambda tmp: tmp.write_text(json.dumps(report, indent=1) + "\n"))
    atomic_write(args.out_md, lambda tmp: tmp.write_text(render_md(report)))
    print(render_md(report))
    errors = sum(r["errors"] for r in report["rows"])
    if errors:
        raise SystemExit(f"{errors} requests failed (see error_examples in {args.out_json})")


if __name__ == "__main__":
    main()
