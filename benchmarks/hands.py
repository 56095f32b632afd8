"""Hands, leave one dataset out: for each hand dataset, train the landmark encoder on the other two
(`byakugan train-landmarks --holdout`), then `byakugan evaluate --detector hand` on the held-out
one, which reports the fusion and each part alone. Prints JSON.

    .venv/bin/python benchmarks/hands.py --model imagenet --cache .cache/landmarks

--model imagenet keeps the CNN part unseen too (the shipped `default` head trained on these sets).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
BYAKUGAN = [sys.executable, "-m", "byakugan.ui.cli"]


def run(args: list[str]) -> str:
    print("$ byakugan " + " ".join(args), file=sys.stderr, flush=True)
    return subprocess.run(BYAKUGAN + args, check=True, stdout=subprocess.PIPE, text=True).stdout


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("datasets", nargs="*", default=["sign-digits", "rock-paper-scissors", "hand-fingers"])
    p.add_argument("--model", default="imagenet", help="CNN model (default imagenet: never saw these sets)")
    p.add_argument("--weight", type=float, default=0.4, help="landmark share of the fused score")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--per-class", type=int, help="a seeded sample of images per class (default all)")
    p.add_argument("--cache", help="folder for extracted landmarks, reused between runs")
    a = p.parse_args()
    report = {"model": a.model, "weight": a.weight, "protocol": "5 shots, a quarter of the classes unknown", "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for ds in a.datasets:
            lm = Path(tmp) / f"landmarks-without-{ds}"
            train = [str(DATA / d) for d in a.datasets] + ["--holdout", ds, "--out", str(lm), "--weight", str(a.weight),
                                                          "--epochs", str(a.epochs), "--hands", "joint", "--mirror", "0", "--dim", "64"]
            run(["train-landmarks", *train] + (["--cache", a.cache] if a.cache else []))
            start = time.perf_counter()
            s = json.loads(run(["evaluate", str(DATA / ds), "--model", a.model, "--detector", "hand", "--landmarks", str(lm),
                                "--trials", str(a.trials), "--unknown-fraction", "0.25", "--json"]
                               + (["--per-class", str(a.per_class)] if a.per_class else [])))
            keys = ("top1_nearest", "top1_prototype", "far_at_tar95", "roc_auc")
            report["results"][ds] = {
                "images": s["images"], "classes": s["classes"], "hands_found": s["landmarks"]["found"],
                "detect_ms_per_image": s["detect_ms_per_image"],
                "evaluate_seconds": round(time.perf_counter() - start, 1),
                "cnn_hand_crop": s["parts"]["cnn"], "landmarks_only": s["parts"]["landmarks"],
                "fusion": {k: s[k] for k in keys if k in s},
            }
            print(ds, json.dumps(report["results"][ds]), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
