"""Runs cria and PyTorch on the same benchmark, back to back, and prints each one's speed,
the ratio and each one's peak RSS.

    cargo build --release --example bench
    python3 bench/compare.py [--train-steps 10] [--decode-tokens 128] [--threads 2]

Needs torch and transformers (scripts/ref/requirements.txt). cria uses all cores rayon sees;
on a 2-core machine both sides use 2 threads.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CRIA = ROOT / "target" / "release" / "examples" / "bench"


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
    a = ap.parse_args()
    if not CRIA.exists():
        sys.exit("build it first: cargo build --release --example bench")
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    torch = [sys.executable, str(ROOT / "bench" / "torch_side.py")]
    rows = []
    for task, n in [("train", a.train_steps), ("decode", a.decode_tokens)]:
        c, c_rss = measure([str(CRIA), task, str(n)], env)
        t, t_rss = measure(torch + [task, str(n), str(a.threads)], env)
        rows.append((task, c["tokens_per_s"], t["tokens_per_s"], c_rss, t_rss))
        print(f"# {task}: cria {json.dumps(c)}\n# {task}: torch {json.dumps(t)}", file=sys.stderr)
    print(f"| benchmark | cria tok/s | PyTorch tok/s | ratio | cria peak RSS | PyTorch peak RSS |")
    print(f"|---|---:|---:|---:|---:|---:|")
    for task, c, t, cr, tr in rows:
        name = {"train": "training step (B=8, T=256)", "decode": "greedy decode, batch 1, KV cache"}[task]
        print(f"| {name} | {c:,.0f} | {t:,.0f} | {c / t:.2f}x | {cr:,.0f} MiB | {tr:,.0f} MiB |")


if __name__ == "__main__":
    main()
