"""Cold start: seconds from starting `byakugan search GALLERY IMAGE` to its answer, in new processes,
side by side in one run: the first search on a machine (the model exported to onnxruntime once),
every later search (onnxruntime from the cache, no torch imported), and the torch path the CLI
took before (Pipeline.for_gallery with torch, as a script).

    python benchmarks/cold_start.py [--runs 5]      (needs ../shared; prints JSON, writes docs/cold_start.json)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
TORCH_PATH = ("import sys; from byakugan.index import Gallery, Pipeline; g = Gallery.open(sys.argv[1]); "
              "p = Pipeline.for_gallery(g); print(p.recognize(g, sys.argv[2])[0].match.label)")


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "docs" / "cold_start.json"))
    a = p.parse_args()
    cli = [sys.executable, "-m", "byakugan.ui.cli"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, source, detector in (("hand", "sign-digits", "hand"), ("anime", "anime-faces", "none")):
            env = dict(os.environ, BYAKUGAN_CACHE=str(Path(tmp) / f"cache-{kind}"))
            gallery, classes = Path(tmp) / kind, sorted((DATA / source).iterdir())[:5]
            for c in classes:
                files = sorted(c.glob("*.jpg"))[:5]
                subprocess.run(cli + ["enroll", str(gallery), c.name, *map(str, files), "--detector", detector,
                                      *(["--model", "anime"] if kind == "anime" else []), "--fallback", "whole"],
                               env=env, check=True, capture_output=True)
            query = str(sorted(classes[0].glob("*.jpg"))[7])
            for f in (Path(tmp) / f"cache-{kind}").glob("onnx/*"):
                f.unlink()  # enrolment exported the model: start the first search from an empty cache
            first = timed(cli + ["search", str(gallery), query], env)
            later = [timed(cli + ["search", str(gallery), query], env) for _ in range(a.runs)]
            torch = [timed([sys.executable, "-c", TORCH_PATH, str(gallery), query], env) for _ in range(a.runs)]
            out[kind] = {"first_search_s": round(first, 2), "later_searches_s_median": round(statistics.median(later), 2),
                         "torch_path_s_median": round(statistics.median(torch), 2),
                         "torch_over_later": round(statistics.median(torch) / statistics.median(later), 2)}
            print(kind, out[kind], file=sys.stderr)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
