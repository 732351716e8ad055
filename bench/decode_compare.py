"""cria against llama.cpp on the same GGUF files, same threads: prompt processing (a ~512-token
prompt) and decoding (batch 1, 128 tokens, greedy, end-of-sequence ignored), plus peak RSS.
Rounds interleave the two runtimes; the table gives medians and the cria/llama.cpp ratio with
its min–max over rounds. llama.cpp is node-llama-cpp's prebuilt build
(`npm install --prefix scripts/gguf`), driven by scripts/gguf/llama.mjs.

    .venv/bin/python scripts/ref/gguf_models.py /tmp/ggm --size 100m
    .venv/bin/python bench/decode_compare.py runs/demo/ppo/checkpoint /tmp/ggm/llama-100m \\
        [--threads 2] [--rounds 3] [--quants f32 q8_0 q4_0]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CRIA = ROOT / "target/release/cria"
HELPER = ROOT / "scripts/gguf/llama.mjs"
NEW = 128


def prompt_text(model=None):
    """A page of the demo's handbook, cut to 512 tokens of `model`'s tokenizer (fewer when its
    context is short: the prompt and the 128 new tokens must fit)."""
    corpus = ROOT / "runs/demo/world/corpus/policies.md"
    if not corpus.exists():
        sys.exit("run `cria demo` first: the prompt is a page of its handbook")
    text = corpus.read_text()[:4000]
    if model is None:
        return text[:2600]
    from tokenizers import Tokenizer

    ctx = json.loads((Path(model) / "config.json").read_text())["max_position_embeddings"]
    tok = Tokenizer.from_file(str(Path(model) / "tokenizer.json"))
    ids = tok.encode(text, add_special_tokens=False).ids[: min(512, ctx - NEW - 8)]
    return tok.decode(ids)


def timed(cmd):
    """Runs cmd under /usr/bin/time; returns (stdout, peak RSS in MiB)."""
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *map(str, cmd)], check=True, capture_output=True, text=True)
    return out.stdout, int(out.stderr.strip().splitlines()[-1]) / 1024


def cria(model, prompt, threads):
    out, rss = timed([CRIA, "generate", "--log", "error", "--model", model, "--prompt", prompt, "--temperature", "0",
                      "--max-new-tokens", NEW, "--ignore-eos", "--json", "--threads", threads])
    d = json.loads(out)
    return len(d["prompt_ids"]) / d["prompt_seconds"], (len(d["ids"]) - 1) / d["decode_seconds"], rss


def llama(model, prompt, threads, tmp):
    job = Path(tmp) / "job.json"
    job.write_text(json.dumps({"model": str(model), "bench": prompt, "n": NEW, "threads": threads}))
    out, rss = timed(["node", HELPER, job])
    d = json.loads(out)
    return d["prompt_tokens"] / d["prompt_seconds"], (d["generated"] - 1) / d["decode_seconds"], rss


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quants", nargs="+", default=["f32", "q8_0", "q4_0"])
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.models:
            name = Path(m).resolve().name
            name = Path(m).resolve().parent.name if name == "checkpoint" else name
            prompt = prompt_text(m)
            for q in a.quants:
                f = Path(tmp) / f"{name}-{q}.gguf"
                subprocess.run([CRIA, "export", "--log", "error", "--model", m, "--to", "gguf", "--quant", q, "--out", f, "--no-modelfile"], check=True, capture_output=True)
                c, l = [], []
                for _ in range(a.rounds):
                    c.append(cria(f, prompt, a.threads))
                    l.append(llama(f, prompt, a.threads, tmp))
                med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
                pp = [x[0] / y[0] for x, y in zip(c, l)]
                tg = [x[1] / y[1] for x, y in zip(c, l)]
                rows.append(
                    f"| {name} | {q} | {f.stat().st_size / 2**20:.1f} MiB | {med(c, 0):.0f} | {med(l, 0):.0f} | "
                    f"{statistics.median(pp):.2f}x ({min(pp):.2f}–{max(pp):.2f}) | {med(c, 1):.1f} | {med(l, 1):.1f} | "
                    f"{statistics.median(tg):.2f}x ({min(tg):.2f}–{max(tg):.2f}) | {med(c, 2):.0f} / {med(l, 2):.0f} |"
                )
                print(rows[-1], file=sys.stderr)
    print(f"{a.threads} threads, {a.rounds} interleaved rounds, prompts of up to 512 tokens, {NEW} new tokens\n")
    print("| model | weights | file | cria pp tok/s | llama.cpp pp tok/s | pp ratio | cria tg tok/s | llama.cpp tg tok/s | tg ratio | peak RSS MiB cria / llama.cpp |")
    print("|---|---|---:|---:|---:|---|---:|---:|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
