"""Self-instruct's ROUGE-L filter, cria against Python's `rouge_score` as Stanford Alpaca runs
it: each new instruction scored against every pool instruction in a multiprocessing pool of all
cores (`Pool(num_cpus).map(partial(rouge_scorer._score_lcs, new_tokens), all_tokens)`, a new
pool per instruction, then the 10 most similar and the max), on the same instructions.

The instructions are synthetic and made here: 60,000 of 3 to 40 words (mean ~12, as Alpaca's),
words drawn from a Zipf law over 4,000 words, and one in ten candidates a near-copy of a pool
instruction (a word dropped or changed) so some score above 0.7. cria filters all 10,000
candidates against the 50,000-instruction pool; Python filters the first `--python-candidates`
of them (the full run would take hours) and its time is scaled to 10,000 — per-candidate cost
does not depend on which candidates, and both sides report the sum of the candidates' maxima on
the shared prefix, which must agree.

    cargo build --release --example bench
    .venv/bin/pip install rouge-score==0.1.2
    .venv/bin/python bench/rouge_compare.py
"""

import argparse
import json
import multiprocessing
import os
import random
import subprocess
import tempfile
import time
from functools import partial

import numpy as np
from rouge_score import rouge_scorer

BENCH = os.path.join(os.path.dirname(__file__), "..", "target", "release", "examples", "bench")


def instructions(n_pool, n_cand, seed=0):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(4000)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    cum = np.cumsum(weights) / sum(weights)

    def sentence():
        k = max(3, min(40, int(rng.gauss(12, 6))))
        return " ".join(vocab[int(np.searchsorted(cum, rng.random()))] for _ in range(k))

    pool = [sentence() for _ in range(n_pool)]
    cands = []
    for i in range(n_cand):
        if i % 10 == 0:
            words = rng.choice(pool).split()
            j = rng.randrange(len(words))
            if rng.random() < 0.5 and len(words) > 4:
                words.pop(j)
            else:
                words[j] = rng.choice(vocab)
            cands.append(" ".join(words))
        else:
            cands.append(sentence())
    return pool, cands


def python_filter(pool, cands, cpus):
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool_tokens = [scorer._tokenizer.tokenize(p) for p in pool]
    t0 = time.perf_counter()
    total, above = 0.0, 0
    for c in cands:
        tokens = scorer._tokenizer.tokenize(c)
        with multiprocessing.Pool(cpus) as p:
            scores = p.map(partial(rouge_scorer._score_lcs, tokens), pool_tokens)
        scores = [s.fmeasure for s in scores]
        _top10 = np.argsort(scores)[-10:][::-1]
        total += max(scores)
        above += max(scores) > 0.7
    return time.perf_counter() - t0, total, above


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", type=int, default=50_000)
    ap.add_argument("--candidates", type=int, default=10_000)
    ap.add_argument("--python-candidates", type=int, default=20)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    a = ap.parse_args()
    pool, cands = instructions(a.pool, a.candidates)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(pool + cands) + "\n")
        path = f.name
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.cpus))
    prefix = subprocess.run([BENCH, "rouge", path, str(a.pool), str(a.python_candidates)], env=env,
                            capture_output=True, text=True, check=True)
    full = subprocess.run([BENCH, "rouge", path, str(a.pool), str(a.candidates)], env=env,
                          capture_output=True, text=True, check=True)
    cria_prefix, cria = json.loads(prefix.stdout), json.loads(full.stdout)
    py_secs, py_sum, py_above = python_filter(pool, cands[: a.python_candidates], a.cpus)
    assert abs(py_sum - cria_prefix["sum_of_max"]) < 1e-6 * max(1.0, py_sum), (py_sum, cria_prefix)
    assert py_above == cria_prefix["above_0_7"], (py_above, cria_prefix)
    py_full = py_secs / a.python_candidates * a.candidates
    print(json.dumps({
        "pool": a.pool, "candidates": a.candidates, "cpus": a.cpus,
        "cria_seconds": cria["seconds"], "cria_above_0_7": cria["above_0_7"],
        "python_seconds_measured": round(py_secs, 2), "python_candidates_measured": a.python_candidates,
        "python_seconds_for_all": round(py_full, 1),
        "speedup": round(py_full / cria["seconds"], 1),
    }))
    os.unlink(path)


if __name__ == "__main__":
    main()
