"""Runs cria and PyTorch on the same benchmark, interleaved for several rounds, and prints each
one's median speed, the median of the rounds' ratios with their range, each one's peak RSS, and
for the training step the share of the machine's fp32 FMA peak each reaches; for decoding, batch 1
and 16 left-padded rows, and how far 16 rows scale over one.

    cargo build --release --example bench
    python3 bench/compare.py [--train-steps 10] [--decode-tokens 128] [--threads 2] [--rounds 3]

Needs torch and transformers (scripts/ref/requirements.txt). cria uses all cores rayon sees;
on a 2-core machine both sides use 2 threads. One run on these shared machines moves by ±10%,
so a round runs cria then PyTorch (then PyTorch first in the next round), and the ratio
reported is the median of the rounds' ratios.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CRIA = ROOT / "target" / "release" / "examples" / "bench"

# The bench model (bench.rs, torch_side.py): vocab 4096, d 384, 6 layers, SwiGLU 1024, T 256.
VOCAB, D, LAYERS, FF, SEQ = 4096, 384, 6, 1024, 256


def flops_per_token():
    """Training FLOPs per token, PaLM's MFU count: 6 per weight of every matrix product
    (the input embedding is a lookup, the untied head is a product) plus 12 · layers · d · T
    for attention's scores and weighted sums (not halved for the causal mask)."""
    per_layer = 4 * D * D + 3 * D * FF
    matmul_params = LAYERS * per_layer + VOCAB * D
    return 6 * matmul_params + 12 * LAYERS * D * SEQ


def fp32_peak(threads):
    """The machine's fp32 FMA peak in FLOP/s on `threads` cores: lanes (16 with AVX-512, 8 with
    AVX2) × 2 FMA units × 2 FLOPs × the clock /proc/cpuinfo reports (a VM's nominal clock)."""
    info = Path("/proc/cpuinfo").read_text()
    flags = next(l for l in info.splitlines() if l.startswith("flags")).split()
    mhz = float(next(l for l in info.splitlines() if l.startswith("cpu MHz")).split(":")[1])
    lanes = 16 if "avx512f" in flags else 8 if "fma" in flags else 4
    return threads * mhz * 1e6 * lanes * 2 * 2, lanes, mhz


def measure(cmd, env=None):
    """Runs cmd, returns (its JSON line, peak RSS in MiB)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, cwd=ROOT)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        sys.exit(f"{cmd} failed with status {status}")
    return json.loads(out.decode().strip().splitlines()[-1]), usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if not CRIA.exists():
        sys.exit("build it first: cargo build --release --example bench")
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    torch = [sys.executable, str(ROOT / "bench" / "torch_side.py")]
    rows = []
    for task, n in [("train", a.train_steps), ("decode", a.decode_tokens), ("decode16", a.decode_tokens)]:
        cs, ts, c_rss, t_rss = [], [], 0.0, 0.0
        for r in range(a.rounds):
            sides = [("cria", [str(CRIA), task, str(n)]), ("torch", torch + [task, str(n), str(a.threads)])]
            for side, cmd in sides if r % 2 == 0 else sides[::-1]:
                out, rss = measure(cmd, env)
                print(f"# {task} round {r + 1}: {side} {json.dumps(out)}", file=sys.stderr)
                if side == "cria":
                    cs.append(out["tokens_per_s"])
                    c_rss = max(c_rss, rss)
                else:
                    ts.append(out["tokens_per_s"])
                    t_rss = max(t_rss, rss)
        ratios = [c / t for c, t in zip(cs, ts)]
        rows.append((task, statistics.median(cs), statistics.median(ts), ratios, c_rss, t_rss))
    print(f"| benchmark | cria tok/s | PyTorch tok/s | ratio (median of {a.rounds}, range) | cria peak RSS | PyTorch peak RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    for task, c, t, ratios, cr, tr in rows:
        name = {"train": "training step (B=8, T=256)", "decode": "greedy decode, batch 1, KV cache",
                "decode16": "greedy decode, 16 left-padded rows (tokens/s of all rows)"}[task]
        spread = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f})"
        print(f"| {name} | {c:,.0f} | {t:,.0f} | {spread} | {cr:,.0f} MiB | {tr:,.0f} MiB |")
    one, sixteen = rows[1], rows[2]
    print(f"\nBatched decode: 16 rows give {sixteen[1] / one[1]:.1f}x batch 1's tokens/s in cria, "
          f"{sixteen[2] / one[2]:.1f}x in PyTorch.")
    peak, lanes, mhz = fp32_peak(a.threads)
    f = flops_per_token()
    c, t = rows[0][1], rows[0][2]
    print(
        f"\nTraining step: {f / 1e6:.1f} MFLOP per token; fp32 FMA peak {peak / 1e9:.0f} GFLOP/s "
        f"({a.threads} cores × {mhz:.0f} MHz × {lanes} lanes × 2 FMA units × 2). "
        f"cria {c * f / 1e9:.0f} GFLOP/s ({c * f / peak:.0%} of peak), "
        f"PyTorch {t * f / 1e9:.0f} GFLOP/s ({t * f / peak:.0%})."
    )


if __name__ == "__main__":
    main()
