"""GFLOP/s of the training step's f32 products: the gemm crate (its own threading, and
cria's row blocks) beside PyTorch (MKL) and NumPy (OpenBLAS), same shapes, same threads,
interleaved for --rounds rounds (median per shape). Answers issue 16's question whether a
packaged sgemm beats the gemm crate at these shapes.

    cargo build --release -p cria-core --example gemm_shapes
    .venv/bin/python bench/gemm_shapes.py --threads 2 --rounds 3
"""
import argparse, json, os, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peers(shapes, threads):
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    out = {}
    for s in shapes:
        m, n, k = s["m"], s["n"], s["k"]
        ta, tb = "xᵀ" in s["shape"], "Wᵀ" in s["shape"]
        rng = np.random.default_rng(0)
        a = rng.random((k, m), dtype=np.float32).T if ta else rng.random((m, k), dtype=np.float32)
        b = rng.random((n, k), dtype=np.float32).T if tb else rng.random((k, n), dtype=np.float32)
        ta_, tb_ = torch.from_numpy(np.ascontiguousarray(a.T)).t() if ta else torch.from_numpy(a), \
            torch.from_numpy(np.ascontiguousarray(b.T)).t() if tb else torch.from_numpy(b)
        res = {}
        for name, f in (("torch", lambda: ta_ @ tb_), ("numpy", lambda: a @ b)):
            best = min(timed(f) for _ in range(20))
            res[name] = 2 * m * n * k / best / 1e9
        out[s["shape"]] = res
    return out


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)  # before numpy loads OpenBLAS
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    exe = os.path.join(ROOT, "target/release/examples/gemm_shapes")
    rows = {}
    for _ in range(args.rounds):
        lines = subprocess.run([exe], env=env, check=True, capture_output=True, text=True).stdout
        shapes = [json.loads(l) for l in lines.splitlines()]
        theirs = peers(shapes, args.threads)
        for s in shapes:
            r = rows.setdefault(s["shape"], {"threaded": [], "blocks": [], "torch": [], "numpy": []})
            r["threaded"].append(s["gemm_threaded_gflops"])
            r["blocks"].append(s["row_blocks_gflops"])
            r["torch"].append(theirs[s["shape"]]["torch"])
            r["numpy"].append(theirs[s["shape"]]["numpy"])
    print(f"| product ({args.threads} threads, GFLOP/s, median of {args.rounds}) | gemm crate threaded | cria blocks | PyTorch (MKL) | NumPy (OpenBLAS) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        med = {k: statistics.median(v) for k, v in r.items()}
        print(f"| {name} | {med['threaded']:.0f} | {med['blocks']:.0f} | {med['torch']:.0f} | {med['numpy']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
