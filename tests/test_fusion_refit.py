"""benchmarks/fusion_refit.py (issue #14): the fusion weight a held-out source is reported at is
chosen on the other sources only, so a source unlike the rest is not flattered."""

import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fusion_refit  # noqa: E402


def fold(path: Path, seed: int, cnn_knows: bool) -> None:
    """Six classes, ten pictures each: one part carries the class, the other is noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(6), 10)
    signal = np.eye(8, dtype=np.float32)[labels] + 0.35 * rng.standard_normal((60, 8)).astype(np.float32)
    noise = rng.standard_normal((60, 8)).astype(np.float32)
    cnn, lm = (signal, noise) if cnn_knows else (noise, signal)
    save_file({"cnn": cnn, "landmarks": lm}, str(path),
              {"labels": json.dumps([f"c{i}" for i in labels]), "landmark_weight": "0.4"})


def test_each_source_is_reported_at_the_weight_the_others_pick(tmp_path):
    fold(tmp_path / "a.safetensors", 1, cnn_knows=False)
    fold(tmp_path / "b.safetensors", 2, cnn_knows=False)
    fold(tmp_path / "c.safetensors", 3, cnn_knows=True)
    out = fusion_refit.study(tmp_path, [1], lambda m: None)
    table = out["sources"]
    # a and b want the landmarks, c the CNN; c is reported at the others' weight, not at its own best
    assert out["nested"]["picks"]["c"] == "0.9" and out["picked_on_all"]["weight"] == 0.9
    best_c = max(table["c"], key=lambda w: table["c"][w]["adapted"]["top1"])
    assert float(best_c) < 0.5
    reported = out["nested"]["adapted"]["worst"]
    assert reported["source"] == "c" and reported["top1"] == table["c"]["0.9"]["adapted"]["top1"] < table["c"][best_c]["adapted"]["top1"]
