"""ROUGE-L F-measures from Google's `rouge_score` (RougeScorer(["rougeL"]), no stemming), the
reference cria's self-instruct filter is held to: pairs of instructions — the project's seed
tasks against each other, and hand-made edge cases (punctuation, digits, accents, case, empty
texts, repeats) — with their scores, written to
crates/cria-instruct/tests/fixtures/rouge_l.json.

    .venv/bin/pip install rouge-score==0.1.2
    .venv/bin/python scripts/ref/rouge_fixtures.py
"""

import json
import pathlib
import random

from rouge_score import rouge_scorer

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/cria-instruct/tests/fixtures/rouge_l.json"


def main():
    seeds = [json.loads(l)["instruction"] for l in open(ROOT / "examples/self-instruct/company_seed_tasks.jsonl")]
    edge = [
        ("Write a haiku -- about C3PO's day!", "write a HAIKU about c3po s day"),
        ("Café über 2x", "caf ber 2x"),
        ("", "anything at all"),
        ("!!! ???", "!!!"),
        ("the the the the", "the"),
        ("Summarise the memo.", "Summarise the memo."),
        ("A B C D E F", "F E D C B A"),
        ("Classify the ticket: billing, technical or other.", "Classify this ticket as billing or technical."),
        ("İstanbul office: ½ day off", "istanbul office day off"),
        ("tab\tand\nnewline separated words", "tab and newline separated words"),
    ]
    rng = random.Random(17)
    pairs = list(edge)
    for _ in range(300):
        a, b = rng.sample(seeds, 2)
        pairs.append((a, b))
    # Near-duplicates, as a teacher writes them: a seed with words dropped or swapped.
    for s in rng.sample(seeds, 40):
        words = s.split()
        k = rng.randrange(len(words))
        near = " ".join(words[:k] + words[k + 1:])
        pairs.append((s, near))
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    out = []
    for a, b in pairs:
        s = scorer.score(a, b)["rougeL"]
        out.append({"target": a, "prediction": b, "precision": s.precision, "recall": s.recall, "fmeasure": s.fmeasure})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"rouge_score": "0.1.2", "pairs": out}, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(out)} pairs -> {OUT}")


if __name__ == "__main__":
    main()
