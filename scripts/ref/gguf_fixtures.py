"""Writes cria-gguf's test fixtures (crates/cria-gguf/tests/fixtures/):

- `llama/`, `qwen2/`: two small transformers checkpoints (scripts/ref/gguf_models.py, size
  "fixture": LLaMA 3-style and Qwen2-style with random q/k/v biases, each its own tokenizer);
- `quant.json`: rows of values (random, all zero, ties in magnitude, halves that round, a
  negative extreme) and their q8_0 and q4_0 bytes from llama.cpp's quantizer (libggml's
  `ggml_quantize_chunk`), checked equal to gguf-py's;
- `llama_cpp.json`: what llama.cpp does with cria's GGUF exports of the two checkpoints: its
  token ids for scripts/check_gguf.py's texts, and its greedy ids after three prompts for the
  f32, q8_0 and q4_0 files.

Needs cria built (`cargo build --release`) and llama.cpp (`npm install --prefix scripts/gguf`).

    .venv/bin/python scripts/ref/gguf_fixtures.py
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, quants

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "scripts/ref"))
import check_gguf  # noqa: E402
import gguf_models  # noqa: E402

OUT = ROOT / "crates/cria-gguf/tests/fixtures"


def quant_rows():
    rng = np.random.default_rng(7)
    rows = [rng.normal(0, 1, 64), rng.normal(0, 0.02, 96), np.zeros(32)]
    tie = np.linspace(-1, 1, 32)
    tie[3], tie[20] = -2.0, 2.0  # equal magnitude, opposite signs: the first one sets the scale
    rows.append(tie)
    halves = np.arange(32) * 0.5 - 8.0  # values that land on .5 after scaling
    rows.append(halves)
    neg = rng.uniform(-1, 1, 32)
    neg[31] = -5.0
    rows.append(neg)
    rows.append(rng.normal(0, 1e-8, 32))  # a scale below f16's normal range
    return [np.asarray(r, dtype=np.float32) for r in rows]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    gguf_models.llama(OUT / "llama", "fixture")
    gguf_models.qwen2(OUT / "qwen2", "fixture")
    ggml = check_gguf.Ggml()
    cases = []
    for r in quant_rows():
        case = {"values": [float(x) for x in r]}
        for q in ("q8_0", "q4_0"):
            theirs = ggml.quantize(q, r.reshape(1, -1))
            py = quants.quantize(r.reshape(1, -1), GGMLQuantizationType[q.upper()]).tobytes()
            assert theirs == py, f"libggml and gguf-py disagree on {q}"
            case[q] = theirs.hex()
        cases.append(case)
    (OUT / "quant.json").write_text(json.dumps(cases, indent=1) + "\n")

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("llama", "qwen2"):
            entry = {"texts": check_gguf.TEXTS, "prompts": check_gguf.PROMPTS, "greedy": {}}
            for q in ("f32", "q8_0", "q4_0"):
                f = Path(tmp) / f"{name}-{q}.gguf"
                check_gguf.run("export", "--log", "error", "--model", OUT / name, "--to", "gguf", "--quant", q, "--out", f, "--no-modelfile")
                got = check_gguf.llama_cpp({"model": str(f), "texts": check_gguf.TEXTS, "prompts": check_gguf.PROMPTS, "n": 16}, tmp)
                entry["tokens"] = got["tokens"]
                entry["llama_cpp"] = got["llama_cpp"]
                entry["greedy"][q] = [g["ids"] + ([g["stopped"]] if g["stopped"] is not None else []) for g in got["greedy"]]
            result[name] = entry
    (OUT / "llama_cpp.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
