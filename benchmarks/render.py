"""Rewrite docs/BENCHMARKS.md from the result files the other scripts in benchmarks/ write into results/.

No number is typed by hand: each section renders one results file and names the command that produced it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from papers import SEED_001_TABLE_5, SEED_002_TABLE_II

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
OUT = HERE.parent / "docs" / "BENCHMARKS.md"


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _by_command(data: dict) -> dict[str, list[str]]:
    """The models of a results file grouped by the command that measured their row."""
    out: dict[str, list[str]] = {}
    for r in data["rows"]:
        out.setdefault(r.get("command", data["command"]), []).append(r["model"])
    return out


def _training_cells(r: dict) -> tuple[str, str]:
    """(epochs, train time) of an accuracy row; a warm restart (`init:`) reads *starting run + this run*."""
    minutes = f"{r['train_seconds'] / 60:.0f} min" if r.get("train_seconds") else "-"
    epochs = str(r.get("epochs") or "-")
    if r.get("init_epochs"):
        epochs = f"{r['init_epochs']} + {epochs}"
        minutes = f"{(r.get('init_train_seconds') or 0) / 60:.0f} + {minutes}"
    return epochs, minutes


def accuracy_section() -> list[str]:
    data = _load("accuracy.json")
    if not data:
        return []
    lines = ["## FER2013 PrivateTest accuracy of ferkit's models", "",
             "Measured with " + "; ".join(f"`{c}` ({', '.join(m)})" for c, m in _by_command(data).items())
             + " (ONNX Runtime, CPU; confidences calibrated as each card says). All ferkit models are trained **from scratch, "
             "on CPU** (no pretrained weights), on the training split the table names, with that dataset's PublicTest "
             "for validation. Labels are compared by name: a model trained on FER+ can answer contempt, which FER2013 "
             "never is, and each such answer counts as an error here.", "",
             "Epochs and train time of a warm restart (`init:` in its recipe) read *starting run + this run*; "
             "`default` ships (int8), `default-fp32` is stage 1 of its recipe chain, exported in fp32 as the "
             "distillation teacher.", "",
             "| model | trained on | recipe | architecture | params | package MB | epochs | train time | accuracy "
             "| flip-TTA accuracy | macro-F1 | top-2 | n |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        epochs, minutes = _training_cells(r)
        recipe = f"configs/{r['recipe']}.yaml" if r.get("recipe") else "-"
        lines.append(f"| {r['model']} | {r.get('trained_on', '-')} | {recipe} | {r['architecture']} | "
                     f"{r['parameters'] / 1e6:.2f}M | {r['size_mb']} | {epochs} | {minutes} | {r['accuracy']:.4f} | "
                     f"{r['flip_accuracy']:.4f} | {r['macro_f1']:.4f} | {r['top2_accuracy']:.4f} | {r['n']} |")
    lines += ["", "Per-class F1 (single crop):", ""] + _per_class_f1(data["rows"])
    lines += ["", "### The papers' own FER2013 numbers (ImageNet-pretrained backbones, GPU; their protocol)", "",
              "| network | seed 002 Table II accuracy % (params M) | seed 001 Table 5 test accuracy |", "|---|---:|---:|"]
    names = list(dict.fromkeys([*SEED_002_TABLE_II, *SEED_001_TABLE_5]))
    for n in names:
        a = SEED_002_TABLE_II.get(n)
        b = SEED_001_TABLE_5.get(n)
        lines.append(f"| {n} | {f'{a[1]:.2f} ({a[0]})' if a else '-'} | {f'{b:.3f}' if b else '-'} |")
    return lines + [""]


def _per_class_f1(rows: list[dict]) -> list[str]:
    """A per-class F1 table over the union of the rows' classes, by name ('-' where a model lacks the class)."""
    classes = list(dict.fromkeys(c for r in rows for c in r["per_class_f1"]))
    lines = ["| model | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for r in rows:
        f1 = r["per_class_f1"]
        lines.append(f"| {r['model']} | " + " | ".join(f"{f1[c]:.3f}" if c in f1 else "-" for c in classes) + " |")
    return lines


def ferplus_section() -> list[str]:
    """FER+ (8 classes, majority protocol): the FER+ package and the default on FER2013Test (the FER+ package on
    FER2013 is a row of :func:`accuracy_section`'s table)."""
    data = _load("ferplus.json")
    if not data:
        return []
    lines = ["## FER+ (8 classes with contempt, majority protocol)", "",
             f"Measured with `{data['command']}`: FER2013Test (FER+'s PrivateTest) with each face labelled by the "
             "emotion that more than half of its ten taggers chose, the other faces left out (FER+'s own protocol). "
             "The 7-class default cannot answer contempt, so its row skips the contempt faces (counted below). "
             "FER+'s authors report about 84-85% for their VGG13 trained from scratch on these labels "
             "(Barsoum et al., ICMI 2016); the best published models, with pretrained backbones, about 90-92% "
             "(see ANCHORS.md).", "",
             "| model | trained on | classes | params | package MB | epochs | train time | accuracy | flip-TTA accuracy "
             "| macro-F1 | ECE | flip-TTA ECE | n | faces skipped |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
             "---:|---:|---:|---|"]
    for r in data["rows"]:
        epochs, minutes = _training_cells(r)
        skipped = ", ".join(f"{n} {label}" for label, n in r.get("skipped", {}).get("label_not_in_model", {}).items())
        lines.append(f"| {r['model']} | {r['trained_on']} | {r['classes']} | {r['parameters'] / 1e6:.2f}M | "
                     f"{r['size_mb']} | {epochs} | {minutes} | {r['accuracy']:.4f} | {r['flip_accuracy']:.4f} | "
                     f"{r['macro_f1']:.4f} | {r['ece']:.4f} | {r['flip_ece']:.4f} | {r['n']} | {skipped or '-'} |")
    lines += ["", "Per-class F1 (single crop):", ""] + _per_class_f1(data["rows"])
    return lines + [""]


def train_speed_section() -> list[str]:
    data = _load("train_speed.json")
    if not data:
        return []
    lines = ["## Training throughput on this CPU", "", f"Measured with `{data['command']}`: {data['setup']}", "",
             "| architecture | params | input | fp32 img/s | bf16 img/s | bf16 s/epoch (FER2013 train) |",
             "|---|---:|---|---:|---:|---:|"]
    for r in data["rows"]:
        lines.append(f"| {r['arch']} | {r['parameters'] / 1e6:.2f}M | {r['input']} | {r['fp32_img_s']:.0f} | "
                     f"{r['bf16_img_s']:.0f} | {28709 / r['bf16_img_s']:.0f} |")
    return lines + [""]


def tta_section() -> list[str]:
    data = _load("tta.json")
    if not data:
        return []
    lines = ["## Test-time augmentation", "",
             f"Measured with `{data['command']}` on {data['data']} (the data's own face crops). tencrop: the crop "
             "resized to 1.125x, its four corners and centre at the input size, and their mirrors. ms per face "
             "includes decoding the images (the same for every mode).", "",
             "| model | split | TTA | accuracy | macro-F1 | ms per face |", "|---|---|---|---:|---:|---:|"]
    for r in data["rows"]:
        lines.append(f"| {r['model']} | {r['split']} | {r['tta']} | {100 * r['accuracy']:.2f}% | {r['macro_f1']:.3f} | "
                     f"{r['ms_per_face_with_decoding']:.2f} |")
    return lines + [""]


def ensembles_section() -> list[str]:
    data = _load("ensembles.json")
    if not data:
        return []
    lines = ["## Ensembles of ferkit models", "",
             f"Measured with `{data['command']}` on {data['data']} ({data['tta']} TTA, ONNX Runtime, CPU): each member "
             "and an ensemble package per method (`ferkit ensemble build`; rank and accuracy weights fitted on "
             "PublicTest), loaded as `--model` loads it. ECE: 15 equal-width bins of top-1 confidence. ms per face: "
             "classification of the split's 48x48 faces in batches of 256 (preprocessing, TTA, combination). Members "
             "carry their own calibration; an ensemble's combined scores are not calibrated until `ferkit calibrate` "
             "fits them, so the last column shows its PrivateTest ECE after a temperature fitted on PublicTest.", "",
             "| model | members (weights) | PublicTest acc | PrivateTest acc | PrivateTest macro-F1 | PrivateTest ECE | "
             "ECE after `ferkit calibrate` | ms per face |", "|---|---|---:|---:|---:|---:|---:|---:|"]

    def cells(row: dict) -> str:
        pub, priv = row["PublicTest"], row["PrivateTest"]
        after = "-" if "ece_after_temperature" not in priv else f"{priv['ece_after_temperature']:.3f}"
        return (f"{100 * pub['accuracy']:.2f}% | {100 * priv['accuracy']:.2f}% | {priv['macro_f1']:.3f} | "
                f"{priv['ece']:.3f} | {after} | {priv['ms_per_face']:.2f} |")

    for m in data["members"]:
        lines.append(f"| {m['name']} (`{m['model']}`) | member | {cells(m)}")
    for e in data["ensembles"]:
        who = ", ".join(f"{n} {w:.2f}" for n, w in zip(e["members"], e["weights"]))
        lines.append(f"| ensemble: {e['method']} | {who} | {cells(e)}")
    best_member = max(data["members"], key=lambda m: m["PublicTest"]["accuracy"])
    best_ensemble = max(data["ensembles"], key=lambda e: e["PublicTest"]["accuracy"])
    gain = best_ensemble["PrivateTest"]["accuracy"] - best_member["PrivateTest"]["accuracy"]
    lines += ["", f"Chosen on PublicTest, the best ensemble ({best_ensemble['method']}) scores "
              f"{100 * best_ensemble['PrivateTest']['accuracy']:.2f}% on PrivateTest against "
              f"{100 * best_member['PrivateTest']['accuracy']:.2f}% for the best member ({best_member['name']}): "
              f"{100 * gain:+.2f} points. Members much weaker than the best one add little or nothing; ensembles pay "
              "off with members of similar accuracy (issue 10 trains them)."]
    lines += ["", f"Accuracy vs number of members k (seed 001): members ordered by PublicTest accuracy, the unweighted "
              f"average of the top k; k chosen on PublicTest: {data['chosen_k']}.", "",
              "| k | members | PublicTest acc | PrivateTest acc |", "|---:|---|---:|---:|"]
    for row in data["curve"]:
        lines.append(f"| {row['k']} | {', '.join(row['members'])} | {100 * row['PublicTest']:.2f}% | "
                     f"{100 * row['PrivateTest']:.2f}% |")
    return lines + ["", f"![accuracy vs k](../{data['curve_png']})", ""]


def calibration_section() -> list[str]:
    data = _load("calibration.json")
    if not data:
        return []
    lines = ["## Calibrated confidence (ECE, NLL, Brier score) before and after `ferkit calibrate`", "",
             f"Measured with `{data['command']}`: the `{data['model']}` package's raw probabilities on FER2013 "
             f"{data['fitted_on']} (n={data['n_fit']:,}) fit each method, one fit per TTA mode, with the code of "
             f"`ferkit calibrate`; every number is measured on {data['measured_on']} (n={data['n_test']:,}), never "
             "seen by a fit. ECE: 15 equal-width bins of top-1 confidence; NLL: natural log; Brier: summed over "
             "the classes (0 is perfect). Temperature scaling never changes a prediction; vector scaling (a scale "
             "and bias per class on log-probabilities, ridge strength by 5-fold cross-validation) can.", "",
             "| TTA | calibration | parameters | accuracy | macro-F1 | mean confidence | ECE | NLL | Brier |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    fitted = [r for r in data["rows"] if "card's own" not in r["calibration"]]
    for r in fitted:
        name = r["calibration"] + (" **(ships)**" if r.get("shipped") else "")
        params = ("-" if r["calibration"].startswith("none") else f"T = {r['temperature']:.3f}"
                  if r["calibration"] == "temperature" else f"a scale and bias per class, ridge {r['l2']:g}")
        lines.append(f"| {r['tta']} | {name} | {params} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                     f"{r['mean_confidence']:.3f} | {r['ece']:.4f} | {r['nll']:.4f} | {r['brier']:.4f} |")
    own = [r for r in data["rows"] if "card's own" in r["calibration"]]
    if own:
        same = all(any(f.get("shipped") and f["tta"] == o["tta"] and (f["ece"], f["nll"]) == (o["ece"], o["nll"])
                       for f in fitted) for o in own)
        lines += ["", f"The card's own parameters (fitted on {data['card_fitted_on']}, applied as the runtime applies "
                      "them) " + ("give the same numbers as the rows marked ships." if same else
                                  "give other numbers than this refit: rerun `ferkit calibrate` on the package.")]
    return lines + [""]


def scale_video_section() -> list[str]:
    data = _load("scale_video.json")
    if data is None:
        return []
    return ["## Videos on Ray", "", *scale_video_table(data), ""]


def scale_video_table(data: dict) -> list[str]:
    """`ferkit video --engine ray`: fps with 1 and 2 Ray workers beside one process, and the stitched output's
    agreement with the single-process one (benchmarks/scale_video.py)."""
    lines = [f"Measured with `{data['command']}` ({data['environment']}"
             + (f"; load average {data['load_average_at_start']} when it started"
                if "load_average_at_start" in data else "") + f"): a {data['seconds']:.0f} s video of real "
             f"photos ({data['frames']} frames, 640x360, 3 people, a cut to a 4th and back), cut into "
             f"{data['segment_s']:g} s segments read from {data['overlap_s']:g} s earlier; every output written. "
             "Driver = seconds this process spent decoding, drawing and writing the stitched frames.", "",
             "| engine | workers | segments | wall s | fps | people | driver s |", "|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['engine']} | {r['workers']} | {r.get('segments', '')} | {r['wall_s']} | {r['fps']} | "
                     f"{r['people']} | {r.get('driver_s', '')} |")
    agree = next((r["agreement"] for r in data["rows"] if "agreement" in r), None)
    if agree:
        lines += ["", f"2 workers against one process: {agree['faces']} face-frames paired, person ids differ on "
                      f"{agree['person_differs']}, face counts differ on {agree['count_differs']} of "
                      f"{agree['frames']} frames; detection-frame scores differ by at most "
                      f"{agree['detected_score_diff']}, tracker-frame scores by at most {agree['tracked_score_diff']} "
                      f"(boxes IoU >= {agree['min_tracked_iou']}); the label agrees on "
                      f"{agree['emotion_agree'] / max(agree['faces'], 1):.1%} and the smoothed label on "
                      f"{agree['smoothed_agree'] / max(agree['faces'], 1):.1%} of face-frames."]
    return lines


def scale_analyze_table(data: dict) -> list[str]:
    """The measured table of `ferkit analyze` on Ray against single-process, and the per-worker figures."""
    lines = ["| engine | detection workers | images/s | faces/s | wall s | Ray start-up s | decode+detect+crop s "
             "(summed) | classify s | model+detector loads s | ferkit imports in workers s | driver writes s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        st = r["stages"]
        write = "-" if st["write_and_other"] is None else f"{st['write_and_other']:.2f}"
        start = "-" if st.get("worker_start") is None else f"{st['worker_start']:.1f}"
        startup = "-" if r["engine"] == "local" else f"{r['startup_s']:.1f}"
        workers = (f"{r['workers']} threads" if r["engine"] == "local" else
                   f"{r['workers']} task{'s' if r['workers'] > 1 else ''} + 1 actor")
        lines.append(f"| {r['engine']} | {workers} | {r['images_per_s']:.2f} | {r['faces_per_s']:.2f} | "
                     f"{r['wall_s']:.1f} | {startup} | {st['decode_detect_crop']:.1f} | {st['classify']:.2f} | "
                     f"{st['model_detector_load']:.2f} | {start} | {write} |")
    ray1 = next((r for r in data["rows"] if r["engine"] == "ray"), None)
    lines += ["", f"{data['images']} images ({data['photos']}, {data['copies']} cop{'y' if data['copies'] == 1 else 'ies'}"
              f" each), {data['faces']} faces, one run each; {data['machine']}. Measured by `{data['command']}`. "
              "Wall time covers listing, model loads, the pipeline and the final write, not Ray's start-up (its own "
              "column). Summed stage seconds add up the tasks' and actors' own clocks, so with several workers they "
              f"exceed the wall time. Largest probability difference between the engines: {data['max_prob_diff']:.1e} "
              "(same faces and boxes)."]
    if ray1:
        n, st = max(ray1["images"], 1), ray1["stages"]
        det, cls = st["decode_detect_crop"] / n, st["classify"] / n
        fixed = ray1["startup_s"] + st["model_detector_load"] + (st.get("worker_start") or 0)
        work = st["decode_detect_crop"] + st["classify"]
        cpus = 64
        actors = max(1, math.ceil(cpus * cls / det))
        lines += ["", "**Where the time goes** (the 1-worker Ray run): decode+detect+crop is "
                  f"{st['decode_detect_crop'] / work:.0%} of the tasks' and actors' work, classification "
                  f"{st['classify'] / work:.0%}. Fixed costs that do not grow with the number of files: Ray start-up "
                  f"{ray1['startup_s']:.1f} s, ferkit's imports in fresh worker processes {st.get('worker_start') or 0:.1f} s "
                  f"(summed over processes), model and detector loads {st['model_detector_load']:.2f} s, "
                  f"{fixed:.1f} s in all. The driver's journal and table writes took {st['write_and_other']:.2f} s "
                  f"({st['write_and_other'] / n * 1000:.2f} ms per image). The rest of the wall time "
                  f"({ray1['wall_s']:.1f} s against {st['decode_detect_crop'] + st['classify']:.1f} s of work) is "
                  "Ray Data's scheduling and the stages waiting for each other, and on this machine the other jobs "
                  "sharing its two cores.",
                  "", f"**Per worker**: a detection CPU does {1 / det:.1f} images/s ({det * 1000:.0f} ms per image), a "
                  f"classifier actor {1 / cls:.0f} images/s ({cls * 1000:.1f} ms per image, its faces batched). "
                  f"**Expected scaling**: C detection CPUs and A actors give about min(C x {1 / det:.1f}, "
                  f"A x {1 / cls:.0f}) images/s once the fixed costs are paid, e.g. {cpus} CPUs (four 16-core nodes) "
                  f"about {cpus / det:.0f} images/s with {actors} actor{'s' if actors > 1 else ''}, "
                  f"{cpus / det * 3600:,.0f} images an hour, until the driver's writes "
                  f"({1 / max(st['write_and_other'] / n, 1e-9):,.0f} images/s here) or the storage's reads bind."]
    return lines


def scale_analyze_section() -> list[str]:
    data = _load("scale_analyze.json")
    if not data:
        return []
    return ["## Batch analysis on Ray (`ferkit analyze --engine ray`)", "",
            *scale_analyze_table(data), "", "docs/SCALING.md explains the table and the expected scaling.", ""]


def scale_train_table(data: dict) -> list[str]:
    """Seconds per training step with 1 and 2 worker processes (benchmarks/scale_train.py)."""
    lines = ["| processes | threads each | s per step | images/s | vs 1 process | load average before |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        lines.append(f"| {r['processes']} | {r['threads_per_process']} | {r['s_per_step']:.3f} | {r['img_s']:.1f} | "
                     f"{r['speedup_vs_1_process']:.2f}x | {r['load_before']:.1f} |")
    return lines + ["", f"Measured with `{data['command']}`: {data['setup']}."]


def scale_train_section() -> list[str]:
    data = _load("scale_train.json")
    if not data:
        return []
    return ["## Data-parallel training (`torchrun`, `ferkit train --engine ray`)", "", *scale_train_table(data), "",
            "docs/SCALING.md explains the table and the expected scaling on GPUs.", ""]


def render_scaling() -> None:
    """Replace the measured blocks of docs/SCALING.md (each between its markers) with the current tables."""
    path = HERE.parent / "docs" / "SCALING.md"
    for name, table in (("scale_analyze", scale_analyze_table), ("scale_video", scale_video_table),
                        ("scale_train", scale_train_table)):
        data = _load(f"{name}.json")
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        if not data or not path.exists() or begin not in path.read_text():
            continue
        text = path.read_text()
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        path.write_text(head + begin + "\n" + "\n".join(table(data)) + "\n" + end + tail)
        print(f"wrote {path} ({name})")


def markdown_section(name: str) -> list[str]:
    path = RESULTS / name
    return [path.read_text().rstrip(), ""] if path.exists() else []


def main() -> None:
    lines = ["# ferkit benchmarks", "",
             "Generated by `python benchmarks/render.py` from the files in `benchmarks/results/`; each section names "
             "the script that measured it. Machine: 2 CPU cores (x86_64, avx512_bf16), 24 GiB RAM, no GPU.", ""]
    lines += (accuracy_section() + ferplus_section() + calibration_section() + tta_section() + ensembles_section() + markdown_section("crop_framing.md")
              + markdown_section("speed.md")
              + markdown_section("detectors.md") + markdown_section("serve_load.md") + markdown_section("memory.md")
              + train_speed_section() + markdown_section("video_speed.md") + scale_analyze_section()
              + scale_video_section() + scale_train_section())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT}")
    render_scaling()


if __name__ == "__main__":
    main()
