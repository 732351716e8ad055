"""Serving, side by side: one small model (the bench model's shape: LLaMA, hidden 384, 6 layers,
random weights, a byte-level BPE tokenizer trained here) served over HTTP by `cria serve` and by
`transformers serve --continuous-batching`, each loaded with 1, 4, 16 and 64 concurrent streams.
Every stream is a streamed `/v1/completions` request: a distinct ~16-token prompt, 64 greedy new
tokens (the model has no end-of-sequence token, so every reply is 64 tokens long). Measured as a
client sees it: aggregate new tokens per second over the wall time of the whole load, time to the
first token (p50, p95), and the server process's peak RSS.

    cargo build --release
    .venv/bin/pip install "transformers[serving]==5.24.0"
    .venv/bin/python bench/serve_compare.py [--streams 1 4 16 64] [--only cria|transformers]

Prints one JSON object per (server, streams) and a Markdown table.
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def words(rng, n):
    """Made-up words of two to four syllables: enough distinct text for 4096 merges."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    return " ".join("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(n))


def make_model(d):
    import random

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(0)
    text = [words(rng, 40) for _ in range(5000)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=4096,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                      num_attention_heads=6, num_key_value_heads=6, max_position_embeddings=1024,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=None, eos_token_id=None,
                      pad_token_id=None)
    LlamaForCausalLM(cfg).save_pretrained(d)
    fast.save_pretrained(d)
    return [words(rng, 6) for _ in range(64)]


def wait_ready(port, proc, timeout=600):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server never became healthy")


def stream(port, model, prompt, tokens, out):
    """One streamed completion; appends (first token time, end time, new tokens)."""
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}})
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, r.read()
    first, chunks, usage = None, 0, None
    for line in r:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        ev = json.loads(line[6:])
        if ev.get("usage"):
            usage = ev["usage"]["completion_tokens"]
        for ch in ev.get("choices", []):
            if ch.get("text"):
                first = first or time.perf_counter()
                chunks += 1
    out.append((first - t0, time.perf_counter(), usage if usage is not None else chunks))


def load(port, model, prompts, n, tokens):
    stream(port, model, prompts[0], 8, [])  # warm-up
    results = []
    threads = [threading.Thread(target=stream, args=(port, model, prompts[i], tokens, results)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = max(r[1] for r in results) - t0
    ttft = sorted(r[0] for r in results)
    new = sum(r[2] for r in results)
    return {"streams": n, "new_tokens": new, "tokens_per_s": new / wall,
            "ttft_p50_s": statistics.median(ttft), "ttft_p95_s": ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))]}


def peak_rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(kind, model_dir, port, parallel):
    if kind == "cria":
        cmd = [str(ROOT / "target/release/cria"), "serve", "--model", f"bench={model_dir}", "--port", str(port),
               "--parallel", str(parallel), "--queue", "256"]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), "bench"
    exe = Path(sys.executable).with_name("transformers")
    cmd = [str(exe), "serve", str(model_dir), "--port", str(port), "--device", "cpu", "--dtype", "float32",
           "--continuous-batching"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), str(model_dir)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--only", choices=["cria", "transformers"])
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        prompts = make_model(tmp / "bench")
        rows = []
        for kind in ["cria", "transformers"]:
            if a.only and a.only != kind:
                continue
            # One server per load, so each peak RSS belongs to that load.
            for n in a.streams:
                proc, model = serve(kind, tmp / "bench", 8790, max(n, 1))
                try:
                    wait_ready(8790, proc)
                    r = {"server": kind, **load(8790, model, prompts, n, a.tokens), "peak_rss_mib": peak_rss_mib(proc.pid)}
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
                print(json.dumps(r), flush=True)
                rows.append(r)
        print("\n| server | streams | tok/s | TTFT p50 | TTFT p95 | peak RSS |\n|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['server']} | {r['streams']} | {r['tokens_per_s']:.0f} | {r['ttft_p50_s'] * 1000:.0f} ms | "
                  f"{r['ttft_p95_s'] * 1000:.0f} ms | {r['peak_rss_mib']:.0f} MiB |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
