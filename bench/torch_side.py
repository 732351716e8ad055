"""PyTorch's side of bench/compare.py: the identical LLaMA in transformers (eager PyTorch, SDPA
attention, float32), limited to the same threads. Prints one JSON line."""

import json
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SEQ, BATCH = 256, 8


def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=4096, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                      num_attention_heads=6, num_key_value_heads=6, max_position_embeddings=1024,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg)


def train(steps):
    m = model().train()
    decay = [p for p in m.parameters() if p.dim() >= 2]
    rest = [p for p in m.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8, foreach=True)
    times = []
    for s in range(steps):
        g = torch.Generator().manual_seed(s)
        ids = torch.randint(0, 4096, (BATCH, SEQ + 1), generator=g)
        t0 = time.perf_counter()
        logits = m(input_ids=ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 4096), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    timed = times[2:]
    secs = sum(timed)
    print(json.dumps({"impl": "pytorch", "steps_timed": len(timed), "s_per_step": secs / len(timed),
                      "tokens_per_s": len(timed) * BATCH * SEQ / secs, "final_loss": loss.item()}))


@torch.no_grad()
def decode(tokens):
    m = model().eval()
    prompt = torch.arange(1, 17).unsqueeze(0)

    def run(n):
        out = m(input_ids=prompt, use_cache=True)
        past, nxt, made = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True), 1
        while made < n:
            out = m(input_ids=nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            made += 1
        return made

    run(8)
    t0 = time.perf_counter()
    made = run(tokens)
    print(json.dumps({"impl": "pytorch", "new_tokens": made, "tokens_per_s": made / (time.perf_counter() - t0)}))


@torch.no_grad()
def decode16(tokens):
    """16 left-padded rows (prompts of 9 to 16 tokens, as bench.rs), greedy, every row running
    the full length, through transformers' generate (which keeps the padded positions right)."""
    m = model().eval()
    prompts = [[1 + (r * 31 + i * 7) % 4000 for i in range(9 + r % 8)] for r in range(16)]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])

    def run(n):
        out = m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, pad_token_id=0, eos_token_id=None)
        return (out.shape[1] - width) * len(prompts)

    run(8)
    t0 = time.perf_counter()
    made = run(tokens)
    print(json.dumps({"impl": "pytorch", "rows": len(prompts), "new_tokens": made,
                      "tokens_per_s": made / (time.perf_counter() - t0)}))


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    {"train": train, "decode": decode, "decode16": decode16}[sys.argv[1]](int(sys.argv[2]))
