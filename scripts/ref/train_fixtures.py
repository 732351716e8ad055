"""Writes the training reference for cria's loop (crates/cria-train/tests/fixtures/train_ref/):
a tiny random LlamaForCausalLM, fixed batches, and what PyTorch computes for them:

* step 0: the loss and every parameter's gradient norm on one batch;
* a 10-step trajectory: AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices only),
  global-norm clipping at 1.0, linear warmup (3 steps) then cosine to min_lr, two micro-batches
  of 2 sequences accumulated per step. Losses, pre-clip gradient norms and final weights.

The learning-rate formula is cria's (`schedule.rs`): warmup lr*(s+1)/W, then
min + (lr-min)/2 * (1 + cos(pi * (s-W)/(S-W))).
"""

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = Path(__file__).resolve().parents[2] / "crates" / "cria-train" / "tests" / "fixtures" / "train_ref"
VOCAB, T, STEPS = 64, 16, 10
HP = dict(lr=3e-3, min_lr=3e-4, warmup=3, beta1=0.9, beta2=0.95, eps=1e-8, wd=0.1, clip=1.0)


def lr_at(s):
    if s < HP["warmup"]:
        return HP["lr"] * (s + 1) / HP["warmup"]
    p = min((s - HP["warmup"]) / max(STEPS - HP["warmup"], 1), 1.0)
    return HP["min_lr"] + 0.5 * (HP["lr"] - HP["min_lr"]) * (1 + math.cos(math.pi * p))


def main():
    torch.manual_seed(7)
    shutil.rmtree(OUT, ignore_errors=True)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.1,
                      attn_implementation="eager")
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(OUT / "init")
    g = torch.Generator().manual_seed(3)
    # micro-batch k of step s is batches[2*s + k]: 2 sequences of T+1 tokens.
    seqs = torch.randint(0, VOCAB, (STEPS * 2, 2, T + 1), generator=g)

    def loss_of(batch):
        logits = model(input_ids=batch[:, :-1]).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))

    loss0 = loss_of(seqs[0])
    loss0.backward()
    grad_norms0 = {n: p.grad.norm().item() for n, p in model.named_parameters()}
    model.zero_grad()

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": HP["wd"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=HP["lr"], betas=(HP["beta1"], HP["beta2"]), eps=HP["eps"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s) / HP["lr"])
    losses, norms = [], []
    for s in range(STEPS):
        total = 0.0
        for k in range(2):
            loss = loss_of(seqs[2 * s + k]) / 2
            loss.backward()
            total += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), HP["clip"])
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(total)
        norms.append(norm.item())

    # Masked SFT loss: transformers' own causal-LM loss with prompt labels set to -100, on
    # the initial weights (reloaded), for a batch whose rows have different prompt lengths.
    init = LlamaForCausalLM.from_pretrained(OUT / "init", attn_implementation="eager")
    sft_ids = seqs[0]
    labels = sft_ids.clone()
    prompt_len = [5, 9]
    for r, n in enumerate(prompt_len):
        labels[r, :n] = -100
    with torch.no_grad():
        sft_loss = init(input_ids=sft_ids, labels=labels).loss.item()

    save_file({"sequences": seqs.to(torch.int64).contiguous()}, OUT / "batches.safetensors")
    final = {n: p.detach().contiguous() for n, p in model.named_parameters()}
    save_file(final, OUT / "final.safetensors")
    (OUT / "expected.json").write_text(json.dumps({
        "hp": HP, "steps": STEPS, "seq_len": T,
        "loss0": loss0.item(), "grad_norms0": grad_norms0,
        "sft_prompt_len": prompt_len, "sft_loss": sft_loss,
        "losses": losses, "grad_norms": norms}, indent=1))
    print("loss0", loss0.item(), "losses", losses)


if __name__ == "__main__":
    main()
