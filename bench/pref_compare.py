"""Preference-learning steps in cria against TRL, back to back on the same checkpoint (the
benchmark LLaMA of bench/compare.py, written once by transformers), the same data and threads:

* reward-model step: `cria rm` vs TRL's RewardTrainer, 8 pairs per step;
* DPO step: `cria dpo` vs TRL's DPOTrainer, 8 pairs per step, reference log-probs precomputed
  on both sides (cria always does; TRL with `precompute_ref_log_probs`);
* an RL iteration (rollouts + reward-model scoring + one update): `cria ppo` (16 prompts, one
  reply each, 1 epoch, one minibatch; it also trains a value model) vs TRL's RLOOTrainer (8
  prompts x 2 generations = 16 replies, one update). TRL has no stable PPO trainer;
* the same iteration with the same algorithm on both sides: cria's RLOO vs TRL's RLOOTrainer and
  cria's GRPO vs TRL's GRPOTrainer, 8 prompts x 2 replies, beta 0.05 (KL in the reward for
  RLOO, k3 term in the loss for GRPO), one update per iteration.

Replies are up to 24 tokens at temperature 1 (random weights rarely stop early, so both sides
generate the full length). Each side's mean step time over the timed steps (two warm-up steps
excluded) and its peak RSS; with `--rounds N` the two sides alternate N times per task and the
table gives the median times and the median speed-up with its range.

    cargo build --release
    python3 bench/pref_compare.py [--steps 10] [--threads 2] [--only rm,dpo,rl,rloo,grpo] [--rounds 3]
        [--row-tokens 250]

Needs scripts/ref/requirements.txt (torch, transformers, trl, datasets).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_compare import CRIA, CORPUS, TOKENIZER, WARMUP, peak_rss_run, write_checkpoint  # noqa: E402

PAIRS, RL_REPLIES, NEW_TOKENS = 8, 16, 24


def write_reward_model(d):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=4096, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                      num_attention_heads=6, num_key_value_heads=6, max_position_embeddings=1024,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, num_labels=1, pad_token_id=3)
    LlamaForSequenceClassification(cfg).save_pretrained(d)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(TOKENIZER / f, d / f)


def write_data(d, n=128, row_tokens=150):
    """Preference pairs cut from the tiny corpus (a question of 40% of `row_tokens`, two answers
    of the rest: 60 + 90 by default, 100 + 150 with `--row-tokens 250`) in TRL's conversational
    explicit-prompt shape, which cria reads too; and the questions as an RL prompt set."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(TOKENIZER / "tokenizer.json"))
    text = " ".join(p.read_text() for p in sorted(CORPUS.iterdir()))
    ids = tok.encode(text, add_special_tokens=False).ids
    nq = round(0.4 * row_tokens)
    na, span = row_tokens - nq, row_tokens * 2 - nq
    rows, prompts, pos = [], [], 0
    for _ in range(n):
        q = tok.decode(ids[pos:pos + nq]).strip()
        a = tok.decode(ids[pos + nq:pos + nq + na]).strip()
        b = tok.decode(ids[pos + nq + na:pos + span]).strip()
        pos = (pos + span) % (len(ids) - span)
        rows.append({"prompt": [{"role": "user", "content": q}],
                     "chosen": [{"role": "assistant", "content": a}],
                     "rejected": [{"role": "assistant", "content": b}]})
        prompts.append({"prompt": [{"role": "user", "content": q}]})
    (d / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompts))


def cria_run(d, task, steps, env):
    out = d / f"cria-{task}"
    shutil.rmtree(out, ignore_errors=True)  # a run left from the previous round would resume
    common = f"""[train]
steps = {steps}
lr = 1e-5
min_lr = 1e-5
warmup_steps = 0
weight_decay = 0.0
log_every = 1
eval_every = 0
save_every = 0
"""
    if task in ("rm", "dpo"):
        cfg = f"""init = "{d / 'model'}"
out = "{out}"
[data]
train = ["{d / 'pairs.jsonl'}"]
val_fraction = 0.0
seq_len = 256
{common}batch_size = {PAIRS}
"""
    else:
        # PPO: one reply to each of 16 prompts; RLOO and GRPO: 2 to each of 8, as TRL's side.
        algorithm, group = ("ppo", 1) if task == "rl" else (task, 2)
        cfg = f"""init = "{d / 'model'}"
reward_model = "{d / 'rm'}"
out = "{out}"
[data]
prompts = ["{d / 'prompts.jsonl'}"]
[rollout]
batch_size = {RL_REPLIES // group}
samples_per_prompt = {group}
max_new_tokens = {NEW_TOKENS}
temperature = 1.0
[ppo]
algorithm = "{algorithm}"
kl_coef = 0.05
epochs = 1
minibatch_size = {RL_REPLIES}
{common}"""
    (d / f"{task}.toml").write_text(cfg)
    cmd = {"rm": "rm", "dpo": "dpo"}.get(task, "ppo")
    _, rss = peak_rss_run([str(CRIA), cmd, "--config", str(d / f"{task}.toml")], env)
    t = [json.loads(x)["elapsed_s"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    return (t[-1] - t[WARMUP - 1]) / (len(t) - WARMUP), rss


def trl_side(d, task, steps, threads):
    import time
    import torch
    from datasets import load_dataset
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                              TrainerCallback)
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(d / "model")
    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())

    common = dict(output_dir=str(d / f"trl-{task}"), max_steps=steps, learning_rate=1e-5,
                  lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                  logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                  dataloader_num_workers=0, seed=0, bf16=False, fp16=False)
    if task == "rm":
        from trl import RewardConfig, RewardTrainer
        model = AutoModelForSequenceClassification.from_pretrained(d / "model", num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        data = load_dataset("json", data_files=str(d / "pairs.jsonl"), split="train")
        trainer = RewardTrainer(model=model, processing_class=tok, train_dataset=data, callbacks=[Clock()],
                                args=RewardConfig(per_device_train_batch_size=PAIRS, max_length=256,
                                                  **common))
    elif task == "dpo":
        from trl import DPOConfig, DPOTrainer
        model = AutoModelForCausalLM.from_pretrained(d / "model")
        data = load_dataset("json", data_files=str(d / "pairs.jsonl"), split="train")
        trainer = DPOTrainer(model=model, processing_class=tok, train_dataset=data, callbacks=[Clock()],
                             args=DPOConfig(per_device_train_batch_size=PAIRS, max_length=256, beta=0.1,
                                            precompute_ref_log_probs=True, **common))
    else:
        # RLOO and GRPO take the same arguments in TRL: k = 2 replies per prompt, β 0.05.
        import trl
        name = {"grpo": "GRPO"}.get(task, "RLOO")
        Config, Trainer = getattr(trl, f"{name}Config"), getattr(trl, f"{name}Trainer")
        model = AutoModelForCausalLM.from_pretrained(d / "model")
        data = load_dataset("json", data_files=str(d / "prompts.jsonl"), split="train")
        trainer = Trainer(model=model, processing_class=tok, train_dataset=data,
                          reward_funcs=[str(d / "rm")], callbacks=[Clock()],
                          args=Config(per_device_train_batch_size=RL_REPLIES, num_generations=2,
                                      max_completion_length=NEW_TOKENS, temperature=1.0,
                                      beta=0.05, **common))
    trainer.train()
    print(json.dumps({"s_per_step": (times[-1] - times[WARMUP - 1]) / (len(times) - WARMUP)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="rm,dpo,rl,rloo,grpo")
    ap.add_argument("--rounds", type=int, default=1,
                    help="cria and TRL alternate this many times per task; the median ratio is reported")
    ap.add_argument("--row-tokens", type=int, default=150,
                    help="tokens of question + answer in a preference row (at most ~245: both sides cut at 256)")
    ap.add_argument("--trl-side", nargs=2, metavar=("DIR", "TASK"), help=argparse.SUPPRESS)
    ap.add_argument("--write", metavar="DIR", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.write:
        d = Path(a.write)
        write_checkpoint(d / "model")
        write_reward_model(d / "rm")
        return
    if a.trl_side:
        return trl_side(Path(a.trl_side[0]), a.trl_side[1], a.steps, a.threads)
    if not CRIA.exists():
        sys.exit("build it first: cargo build --release")
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads),
               RUST_LOG="warn", TOKENIZERS_PARALLELISM="false")
    names = {"rm": f"reward-model step (8 pairs, ~{a.row_tokens} tokens each)",
             "dpo": f"DPO step (8 pairs, ~{a.row_tokens} tokens each)",
             "rl": f"RL iteration ({RL_REPLIES} replies of {NEW_TOKENS} tokens; cria PPO vs TRL RLOO)",
             "rloo": f"RLOO iteration ({RL_REPLIES // 2} prompts x 2 replies of {NEW_TOKENS} tokens)",
             "grpo": f"GRPO iteration ({RL_REPLIES // 2} prompts x 2 replies of {NEW_TOKENS} tokens)"}
    tasks = a.only.split(",")
    runs = {task: [] for task in tasks}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        # In a child: a forked parent's pre-exec size would count in each child's peak RSS.
        subprocess.run([sys.executable, __file__, "--write", str(d)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        write_data(d, row_tokens=a.row_tokens)
        # Rounds interleave the two sides, so a slow spell of a shared machine hits both.
        for r in range(a.rounds):
            for task in tasks:
                c, c_rss = cria_run(d, task, a.steps, env)
                out, t_rss = peak_rss_run([sys.executable, __file__, "--steps", str(a.steps), "--threads",
                                           str(a.threads), "--trl-side", str(d), task], env)
                t = json.loads(out.strip().splitlines()[-1])["s_per_step"]
                runs[task].append((c, t, c_rss, t_rss))
                print(f"# round {r + 1} {task}: cria {c:.3f} s/step, TRL {t:.3f} s/step ({t / c:.2f}x)",
                      file=sys.stderr)
    med = statistics.median
    print(f"| {a.threads} threads, {a.rounds} round(s) | cria s/step | TRL s/step | cria speed-up "
          "(median, min-max) | cria peak RSS | TRL peak RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    for task in tasks:
        rs = runs[task]
        ratios = [t / c for c, t, _, _ in rs]
        spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(rs) > 1 else ""
        print(f"| {names[task]} | {med(x[0] for x in rs):.3f} | {med(x[1] for x in rs):.3f} | "
              f"{med(ratios):.2f}x{spread} | {max(x[2] for x in rs):,.0f} MiB | {max(x[3] for x in rs):,.0f} MiB |")

if __name__ == "__main__":
    main()
