"""An SFT step in cria against TRL's SFTTrainer: the same checkpoint (the benchmark LLaMA of
bench/compare.py, 6 layers x 384, written once by transformers), the same conversations, batch,
length and threads, run back to back. Full fine-tuning and LoRA (r 16 on all seven projections),
each side's mean step time over the timed steps and its peak RSS. With `--rounds N` the two
sides alternate N times per method (a slow spell of a shared machine hits both) and the table
gives the median speed-up with its range.

    cargo build --release
    python3 bench/sft_compare.py [--steps 12] [--threads 2] [--rounds 3]

Needs torch, transformers, peft and trl (scripts/ref/requirements.txt).
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

ROOT = Path(__file__).resolve().parents[1]
CRIA = ROOT / "target" / "release" / "cria"
TOKENIZER = ROOT / "crates" / "cria-data" / "tests" / "fixtures" / "chat"
CORPUS = ROOT / "examples" / "tiny" / "corpus"
BATCH, SEQ, WARMUP = 8, 256, 2
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def write_checkpoint(d):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=4096, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                      num_attention_heads=6, num_key_value_heads=6, max_position_embeddings=1024,
                      rms_norm_eps=1e-5, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(d)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(TOKENIZER / f, d / f)


def write_data(d, n=256):
    """Conversations cut from the tiny corpus: a ~60-token question, a ~180-token answer, so a
    rendered example is ~250 tokens and nothing is truncated on either side."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(TOKENIZER / "tokenizer.json"))
    text = " ".join(p.read_text() for p in sorted(CORPUS.iterdir()))
    ids = tok.encode(text, add_special_tokens=False).ids
    chat, trl = [], []
    pos = 0
    for _ in range(n):
        q = tok.decode(ids[pos:pos + 60]).strip()
        a = tok.decode(ids[pos + 60:pos + 240]).strip()
        pos = (pos + 240) % (len(ids) - 240)
        chat.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
        trl.append({"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]})
    for name, rows in [("chat.jsonl", chat), ("trl.jsonl", trl)]:
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def peak_rss_run(cmd, env):
    """Runs cmd; returns (stdout, peak RSS MiB)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{err.decode()[-3000:]}")
    return out.decode(), usage.ru_maxrss / 1024


def cria_run(d, method, steps, env):
    out = d / f"cria-{method}"
    shutil.rmtree(out, ignore_errors=True)  # each run from an empty directory, not a resume
    cfg = f"""init = "{d / 'model'}"
out = "{out}"
method = "{method}"
[lora]
r = 16
alpha = 32
target_modules = {json.dumps(MODULES)}
[data]
train = ["{d / 'chat.jsonl'}"]
val_fraction = 0.0
seq_len = {SEQ}
[train]
steps = {steps}
batch_size = {BATCH}
lr = 1e-4
warmup_steps = 0
weight_decay = 0.0
log_every = 1
eval_every = 0
save_every = 0
"""
    (d / f"{method}.toml").write_text(cfg)
    _, rss = peak_rss_run([str(CRIA), "sft", "--config", str(d / f"{method}.toml")], env)
    logs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    t = [l["elapsed_s"] for l in logs]
    return (t[-1] - t[WARMUP - 1]) / (len(t) - WARMUP), rss


def trl_side(d, method, steps, threads):
    """Runs in a child process: TRL's SFTTrainer, printing the timed mean step."""
    import time
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(d / "model")
    model = AutoModelForCausalLM.from_pretrained(d / "model", torch_dtype=torch.float32)
    peft_config = None
    if method == "lora":
        from peft import LoraConfig
        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=MODULES,
                                 task_type="CAUSAL_LM")
    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())

    args = SFTConfig(output_dir=str(d / f"trl-{method}"), per_device_train_batch_size=BATCH,
                     max_length=SEQ, packing=False, completion_only_loss=True, max_steps=steps,
                     learning_rate=1e-4, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                     max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[],
                     use_cpu=True, dataloader_num_workers=0, seed=0, bf16=False, fp16=False)
    data = load_dataset("json", data_files=str(d / "trl.jsonl"), split="train")
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                         peft_config=peft_config, callbacks=[Clock()])
    trainer.train()
    print(json.dumps({"s_per_step": (times[-1] - times[WARMUP - 1]) / (len(times) - WARMUP)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate the two sides this many times; report the median ratio")
    ap.add_argument("--trl-side", nargs=2, metavar=("DIR", "METHOD"), help=argparse.SUPPRESS)
    ap.add_argument("--write-checkpoint", metavar="DIR", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.write_checkpoint:
        return write_checkpoint(Path(a.write_checkpoint))
    if a.trl_side:
        return trl_side(Path(a.trl_side[0]), a.trl_side[1], a.steps, a.threads)
    if not CRIA.exists():
        sys.exit("build it first: cargo build --release")
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads),
               RUST_LOG="warn", TOKENIZERS_PARALLELISM="false")
    runs = {"full": [], "lora": []}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        # In a child: Linux counts the pre-exec size of a forked parent in a child's peak RSS,
        # so this process must not grow by importing torch.
        subprocess.run([sys.executable, __file__, "--write-checkpoint", str(d / "model")], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        write_data(d)
        for r in range(a.rounds):
            for method in runs:
                c, c_rss = cria_run(d, method, a.steps, env)
                out, t_rss = peak_rss_run([sys.executable, __file__, "--steps", str(a.steps), "--threads",
                                           str(a.threads), "--trl-side", str(d), method], env)
                t = json.loads(out.strip().splitlines()[-1])["s_per_step"]
                runs[method].append((c, t, c_rss, t_rss))
                print(f"# round {r + 1} {method}: cria {c:.3f} s/step, TRL {t:.3f} s/step ({t / c:.2f}x)",
                      file=sys.stderr)
    med = statistics.median
    print(f"| SFT step (B={BATCH}, ~250 tokens, {a.threads} threads, {a.rounds} round(s)) | cria s/step | "
          f"TRL s/step | cria speed-up (median, min-max) | cria peak RSS | TRL peak RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    for method, rs in runs.items():
        name = {"full": "full fine-tuning", "lora": "LoRA r 16, all 7 projections"}[method]
        ratios = [t / c for c, t, _, _ in rs]
        spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(rs) > 1 else ""
        print(f"| {name} | {med(x[0] for x in rs):.3f} | {med(x[1] for x in rs):.3f} | "
              f"{med(ratios):.2f}x{spread} | {max(x[2] for x in rs):,.0f} MiB | {max(x[3] for x in rs):,.0f} MiB |")

if __name__ == "__main__":
    main()
