"""Checks that transformers loads a checkpoint cria wrote and computes the same logits and the
same greedy continuation as cria does.

    cargo build --release
    python3 scripts/ref/check_cria_checkpoint.py runs/tiny/checkpoint "On Friday the sea was"
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
CRIA = ROOT / "target" / "release" / "cria"


def main():
    ckpt, prompt = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "Hello"
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(ckpt)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "logits.safetensors"
        subprocess.run([CRIA, "logits", "--model", ckpt, "--prompt", prompt, "--out", out], check=True)
        ours = load_file(out)
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == [int(x) for x in ours["input_ids"][0].tolist()], "tokenization differs"
    with torch.no_grad():
        theirs = model(input_ids=ids).logits
    diff = (theirs - ours["logits"]).abs().max().item()
    print(f"{ckpt}: {ids.shape[1]} tokens, max |logit diff| {diff:.2e}")
    assert diff < 1e-4, "logits differ"
    gen = model.generate(ids, max_new_tokens=24, do_sample=False)[0, ids.shape[1]:]
    text = tok.decode(gen, skip_special_tokens=True)
    cria = subprocess.run([CRIA, "generate", "--model", ckpt, "--prompt", prompt, "--temperature", "0",
                           "--max-new-tokens", "24"], check=True, capture_output=True, text=True).stdout
    print(f"transformers: {text!r}\ncria:         {cria.rstrip(chr(10))!r}")
    assert cria.rstrip("\n") == text, "greedy continuations differ"
    print("OK: transformers reloads the cria checkpoint with the same logits and greedy continuation")


if __name__ == "__main__":
    main()
