"""Data-parallel scaling of `cria pretrain` on this machine: the bench model (compare.py's LLaMA,
13.8M parameters, seq 256) at one global batch of 8 rows per step, run as

  1. one process, batch 8, all threads;
  2. one process, batch 4 x 2 micro-batches, all threads (the 2-rank run's arithmetic);
  3. `mpirun -np N` ranks, batch 4 x 2 micro-batches split over the ranks, one core each.

Rounds interleave the three; each reports the median tokens/s over the steps after the first two
and, for the ranks, the share of a step spent in the gradient all-reduce (rank 0's `comm_s`)
and waiting for the slower rank before it (`wait_s`). From the all-reduce's measured bus bandwidth
it estimates the step at 8 and 64 ranks (ring all-reduce: each rank sends and receives
2(N-1)/N of the gradient bytes), with the same per-rank work.

    cargo build --release -p cria --features mpi
    python3 bench/scale.py [--steps 12] [--rounds 2] [--ranks 2]

Needs Open MPI (scripts/setup installs it). Writes its scratch files under /tmp/cria-scale.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CRIA = ROOT / "target" / "release" / "cria"
WORK = Path("/tmp/cria-scale")
PARAMS = 4096 * 384 * 2 + 6 * (4 * 384 * 384 + 3 * 384 * 1024 + 2 * 384) + 384

MODEL = """
[model]
hidden_size = 384
intermediate_size = 1024
num_hidden_layers = 6
num_attention_heads = 6
num_key_value_heads = 6
max_position_embeddings = 1024
"""


def corpus():
    """About 3 MB of sentences from a fixed word list (enough windows for every run)."""
    d = WORK / "corpus"
    if (d / "text.txt").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        for _ in range(6000)
    ]
    lines = []
    for _ in range(60000):
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(5, 14))) + ".")
    (d / "text.txt").write_text("\n".join(lines))
    return d


def config(batch, accum, steps):
    p = WORK / f"b{batch}x{accum}.toml"
    p.write_text(
        f'tokenizer = "{WORK / "tok"}"\n'
        + MODEL
        + f"""
[data]
inputs = ["{WORK / "corpus"}"]
seq_len = 256
val_fraction = 0.01
[train]
steps = {steps}
batch_size = {batch}
grad_accum = {accum}
lr = 3e-4
warmup_steps = 2
log_every = 1
eval_every = 0
save_every = 0
"""
    )
    return p


def run(cmd, out):
    """Runs a training command into `out`; returns its metrics lines."""
    subprocess.run(["rm", "-rf", str(out)], check=True)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    p = subprocess.run(cmd + ["--out", str(out), "--log", "warn"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ranks", type=int, default=2)
    a = ap.parse_args()
    if not CRIA.exists():
        sys.exit("build first: cargo build --release -p cria --features mpi")
    WORK.mkdir(exist_ok=True)
    corpus()
    if not (WORK / "tok" / "tokenizer.json").exists():
        subprocess.run([str(CRIA), "tokenizer", "train", "--input", str(WORK / "corpus"),
                        "--vocab-size", "4096", "--out", str(WORK / "tok"), "--log", "warn"],
                       check=True, stdout=subprocess.DEVNULL)
    n = a.ranks
    runs = {
        "1 process, batch 8, all threads": [str(CRIA), "pretrain", "--config",
                                            str(config(8, 1, a.steps))],
        f"1 process, batch {8 // n} x {n}, all threads": [
            str(CRIA), "pretrain", "--config", str(config(8 // n, n, a.steps))],
        f"{n} ranks (mpirun), batch {8 // n} each, 1 core each": [
            "mpirun", "-np", str(n), "--bind-to", "core", str(CRIA), "pretrain", "--config",
            str(config(8 // n, n, a.steps))],
    }
    tps = {k: [] for k in runs}
    comm, wait, step_s = [], [], []
    for r in range(a.rounds):
        for name, cmd in runs.items():
            logs = run(cmd, WORK / "out")[2:]
            tps[name].append(statistics.median(l["tokens_per_s"] for l in logs))
            if "comm_s" in logs[0]:
                comm += [l["comm_s"] for l in logs]
                wait += [l["wait_s"] for l in logs]
                step_s += [2048 / l["tokens_per_s"] for l in logs]
            print(f"round {r + 1}: {name}: {tps[name][-1]:.0f} tok/s", file=sys.stderr)
    base = statistics.median(tps[next(iter(runs))])
    print(f"| run | tokens/s (median of {a.rounds} rounds) | vs one process, batch 8 |")
    print("|---|---|---|")
    for name, v in tps.items():
        m = statistics.median(v)
        print(f"| {name} | {m:,.0f} ({min(v):,.0f}-{max(v):,.0f}) | {m / base:.2f}x |")
    c, w, s = statistics.median(comm), statistics.median(wait), statistics.median(step_s)
    grad_bytes = 4 * PARAMS
    # Bus bandwidth as NCCL's tests define it: what each rank moves in a ring all-reduce.
    bus = 2 * (n - 1) / n * grad_bytes / c
    print()
    print(f"all-reduce of {grad_bytes / 1e6:.1f} MB of gradients: {c * 1e3:.0f} ms median "
          f"({100 * c / s:.1f}% of a {s:.2f} s step), bus bandwidth {bus / 1e9:.2f} GB/s; "
          f"waiting for the slower rank before it: {w * 1e3:.0f} ms ({100 * w / s:.1f}%)")
    compute = s - c
    for ranks in (8, 64):
        for label, bw in ((f"this machine's {bus / 1e9:.1f} GB/s", bus),
                          ("10 GbE (1.25 GB/s)", 1.25e9), ("100 Gb InfiniBand (12.5 GB/s)", 12.5e9)):
            t = 2 * (ranks - 1) / ranks * grad_bytes / bw
            print(f"estimate, {ranks} ranks over {label}: step {compute + t:.2f} s "
                  f"(all-reduce {t * 1e3:.0f} ms, {100 * t / (compute + t):.0f}%), "
                  f"{ranks * 2048 / n / (compute + t):,.0f} tokens/s")


if __name__ == "__main__":
    main()
