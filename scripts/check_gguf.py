"""Proves that a `cria export --to gguf` file is what llama.cpp expects, with llama.cpp itself
(node-llama-cpp's prebuilt llama.cpp, from npm: its libraries run on glibc 2.34, where the PyPI
wheels of llama.cpp need 2.38) and the `gguf` package:

1. every export (f32, f16, q8_0, q4_0) loads in llama.cpp;
2. llama.cpp tokenises a fixed set of texts exactly as cria does (`cria logits`' input ids);
3. greedy continuations from llama.cpp on the f32 and f16 files equal cria's on the checkpoint
   (`cria generate --temperature 0`); the q8_0/q4_0 ones are counted beside them;
4. cria's q8_0 and q4_0 tensors are byte-identical to llama.cpp's own quantizer (libggml's
   `ggml_quantize_chunk`, what `llama-quantize` runs) and to gguf-py's, on cria's f32 export.

    npm install --prefix scripts/gguf && .venv/bin/pip install gguf numpy safetensors
    .venv/bin/python scripts/check_gguf.py runs/demo/ppo/checkpoint /tmp/ggm/llama /tmp/ggm/qwen2

(scripts/ref/gguf_models.py makes the two transformers checkpoints.) Exit status 1 on any
mismatch; a Markdown table of the results goes to stdout.
"""

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, quants
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
CRIA = ROOT / "target/release/cria"
HELPER = ROOT / "scripts/gguf/llama.mjs"
LIBS = ROOT / "scripts/gguf/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
QUANTS = ["f32", "f16", "q8_0", "q4_0"]
GGML_TYPE = {"q8_0": 8, "q4_0": 2}
TEXTS = [
    "Hello world",
    "The office in Lisbon opens at 9:00 and closes at 17:30.",
    "  leading spaces, trailing spaces  ",
    "Don't, won't, we'll, they're, I'm, it's.",
    "Numbers: 1 12 123 1234 12345 3.14159 -42",
    "line one\nline two\n\n\tindented with a tab\r\nwindows line",
    "Ünïcödé: café, naïve, Zürich, 東京, Москва, 🦙🐑",
    "def f(x):\n    return {'a': [1, 2, 3]}  # code",
    "ALL CAPS AND MiXeD cAsE",
]
PROMPTS = ["The office in", "Expense reports are", "Hello"]
NEW_TOKENS = 24


def run(*args):
    return subprocess.run([str(CRIA), *map(str, args)], check=True, capture_output=True, text=True).stdout


def cria_ids(model, text, tmp):
    out = Path(tmp) / "logits.safetensors"
    run("logits", "--log", "error", "--model", model, "--prompt", text, "--out", out)
    return load_file(str(out))["input_ids"].astype(np.int64)[0].tolist()


def cria_greedy(model, prompt):
    out = run("generate", "--log", "error", "--model", model, "--prompt", prompt, "--temperature", "0", "--max-new-tokens", NEW_TOKENS, "--json")
    return json.loads(out)


def llama_cpp(job, tmp):
    path = Path(tmp) / "job.json"
    path.write_text(json.dumps(job))
    out = subprocess.run(["node", str(HELPER), str(path)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


# llama.cpp keeps its KV cache in f16, so even an f32 file is not computed in f32 throughout:
# where cria's two best logits are closer than this, either choice is the same model's.
TIE = 0.01


def compare_greedy(theirs, ours):
    """'equal', 'tie' (the first different token was a near tie in cria's logits) or 'differ'.
    llama.cpp stops at any end-of-generation token (included in its ids), `cria generate` only
    at end-of-sequence, so cria's ids may go on after llama.cpp's stop."""
    a, b = theirs["ids"], ours["ids"]
    if theirs["stopped"] is not None:
        a = a + [theirs["stopped"]]
    n = min(len(a), len(b))
    k = next((i for i in range(n) if a[i] != b[i]), None)
    if k is None:
        return "equal" if len(a) == len(b) or theirs["stopped"] is not None or len(b) > len(a) else "differ"
    return "tie" if ours["margins"][k] < TIE else "differ"


class Ggml:
    """libggml-base's quantizer, as llama-quantize calls it."""

    def __init__(self):
        self.lib = ctypes.CDLL(str(LIBS / "libggml-base.so"))
        f = self.lib.ggml_quantize_chunk
        f.restype = ctypes.c_size_t
        f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]

    def quantize(self, qtype, rows):
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        n_rows, n_per_row = rows.shape
        dst = np.zeros(2 * n_rows * n_per_row, dtype=np.uint8)  # more than q8_0 (34/32 bytes a value) needs
        size = self.lib.ggml_quantize_chunk(GGML_TYPE[qtype], rows.ctypes.data, dst.ctypes.data, 0, n_rows, n_per_row, None)
        return dst[:size].tobytes()


def compare_quant(ggml, f32_file, q_file, qtype):
    """Tensors of cria's q file that differ from ggml's and gguf-py's quantization of the f32 file."""
    base = {t.name: t for t in GGUFReader(str(f32_file)).tensors}
    bad, n = [], 0
    for t in GGUFReader(str(q_file)).tensors:
        if t.tensor_type.name.lower() != qtype:
            continue
        n += 1
        rows = np.asarray(base[t.name].data, dtype=np.float32).reshape(-1, int(t.shape[0]))
        ours = t.data.tobytes()
        theirs = ggml.quantize(qtype, rows)
        py = quants.quantize(rows, GGMLQuantizationType[qtype.upper()]).tobytes()
        if ours != theirs or ours != py:
            bad.append(t.name)
    return n, bad


def check(model, tmp, failures, rows, ggml):
    name = Path(model).resolve().name
    if name == "checkpoint":
        name = Path(model).resolve().parent.name
    files = {}
    for q in QUANTS:
        f = Path(tmp) / f"{name}-{q}.gguf"
        run("export", "--log", "error", "--model", model, "--to", "gguf", "--quant", q, "--out", f, "--no-modelfile")
        files[q] = f
    reference = [cria_greedy(model, p) for p in PROMPTS]
    ours_tok = [cria_ids(model, t, tmp) for t in TEXTS]
    release = None
    for q in QUANTS:
        got = llama_cpp({"model": str(files[q]), "texts": TEXTS, "prompts": PROMPTS, "n": NEW_TOKENS}, tmp)
        release = got["llama_cpp"]
        tok_ok = sum(a == b for a, b in zip(ours_tok, got["tokens"]))
        for text, a, b in zip(TEXTS, ours_tok, got["tokens"]):
            if a != b:
                failures.append(f"{name} {q}: tokens of {text!r}: cria {a} llama.cpp {b}")
        verdicts = [compare_greedy(g, r) for g, r in zip(got["greedy"], reference)]
        equal = verdicts.count("equal")
        ties = verdicts.count("tie")
        if q in ("f32", "f16"):
            for p, g, r, v in zip(PROMPTS, got["greedy"], reference, verdicts):
                if v == "differ":
                    failures.append(f"{name} {q}: greedy after {p!r}: llama.cpp {g['text']!r} cria {r['text']!r}")
        identical = "-"
        if q in GGML_TYPE:
            n, bad = compare_quant(ggml, files["f32"], files[q], q)
            identical = f"{n - len(bad)}/{n} tensors"
            if bad or n == 0:
                failures.append(f"{name} {q}: {len(bad)} of {n} tensors differ from llama.cpp's quantizer: {bad[:5]}")
        rows.append(
            f"| {name} | {q} | {files[q].stat().st_size / 1e6:.2f} MB | loads | {tok_ok}/{len(TEXTS)} | "
            f"{equal}/{len(PROMPTS)}{f' (+{ties} near tie)' if ties else ''} | {identical} |"
        )
    return release


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="checkpoint directories")
    a = ap.parse_args()
    if not CRIA.exists():
        sys.exit(f"{CRIA} is missing: cargo build --release first")
    if not (LIBS / "libggml-base.so").exists():
        sys.exit("llama.cpp is missing: npm install --prefix scripts/gguf")
    failures, rows = [], []
    ggml = Ggml()
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.models:
            release = check(m, tmp, failures, rows, ggml)
    print(f"llama.cpp {release['release']} (node-llama-cpp 3.22.1 from npm), gguf-py from PyPI\n")
    print("| model | export | size | llama.cpp | tokens equal | greedy equal to cria | bytes = llama.cpp's quantizer |")
    print("|---|---|---:|---|---:|---:|---|")
    print("\n".join(rows))
    for f in failures:
        print("FAIL:", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
