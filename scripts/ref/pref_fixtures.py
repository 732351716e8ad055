"""Writes the preference-learning references (crates/cria-train/tests/fixtures/pref_ref/):

* `losses.json`: InstructGPT's ranking loss on fixed rewards for one K=4 and one K=2 group
  (-1/C(K,2) sum log sigmoid(r_better - r_worse), averaged over groups) and its gradient; DPO's
  sigmoid loss on fixed policy/reference log-probs (beta 0.1), its implicit rewards and gradient.
* `rm/`: a tiny random `LlamaForSequenceClassification` (num_labels 1, pad id 0) and, in
  `rm.json`, its rewards for right-padded rows, the ranking loss over them and every
  parameter's gradient norm.
* `lm/` and `ref/`: two tiny random `LlamaForCausalLM`s and, in `dpo.json`, the masked
  sequence log-probs of chosen/rejected rows under each, DPO's loss with `lm` as the policy and
  `ref` as the reference, and every policy parameter's gradient norm.

    .venv/bin/python scripts/ref/pref_fixtures.py
"""

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

OUT = Path(__file__).resolve().parents[2] / "crates" / "cria-train" / "tests" / "fixtures" / "pref_ref"
VOCAB = 48


def ranking_loss(r, groups):
    total, start = 0.0, 0
    for k in groups:
        g = r[start:start + k]
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        total = total - sum(F.logsigmoid(g[i] - g[j]) for i, j in pairs) / len(pairs)
        start += k
    return total / len(groups)


def dpo(policy, reference, beta):
    rewards = beta * (policy - reference)
    chosen, rejected = rewards[0::2], rewards[1::2]
    return -F.logsigmoid(chosen - rejected).mean(), chosen, rejected


def config(**kw):
    return LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.1,
                       attn_implementation="eager", pad_token_id=0, **kw)


def rows(g, lengths, t):
    """Right-padded rows of ids in 1..VOCAB (0 is the pad id)."""
    ids = torch.zeros(len(lengths), t, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, VOCAB, (n,), generator=g)
    return ids


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    out = {}

    r = torch.tensor([1.5, 0.2, 0.9, -0.7, 0.3, 0.8], requires_grad=True)
    groups = [4, 2]
    loss = ranking_loss(r, groups)
    loss.backward()
    out["ranking"] = {"rewards": r.tolist(), "groups": groups, "loss": loss.item(), "grad": r.grad.tolist()}

    pol = torch.tensor([-12.0, -15.5, -30.25, -29.0, -7.5, -9.0], requires_grad=True)
    ref = torch.tensor([-12.5, -14.0, -31.0, -30.5, -8.0, -8.25])
    beta = 0.1
    loss, chosen, rejected = dpo(pol, ref, beta)
    loss.backward()
    out["dpo"] = {"policy": pol.tolist(), "reference": ref.tolist(), "beta": beta, "loss": loss.item(),
                  "grad": pol.grad.tolist(), "reward_chosen": chosen.mean().item(),
                  "reward_rejected": rejected.mean().item(),
                  "reward_accuracy": (chosen > rejected).float().mean().item()}
    (OUT / "losses.json").write_text(json.dumps(out, indent=1))

    # The reward model: rewards at each row's last non-pad token, ranking loss, gradients.
    torch.manual_seed(11)
    rm = LlamaForSequenceClassification(config(num_labels=1))
    rm.save_pretrained(OUT / "rm")
    g = torch.Generator().manual_seed(5)
    lengths = [9, 6, 12, 7, 10, 4]
    ids = rows(g, lengths, 12)
    rewards = rm(input_ids=ids).logits[:, 0]
    loss = ranking_loss(rewards, groups)
    loss.backward()
    (OUT / "rm.json").write_text(json.dumps({
        "ids": ids.tolist(), "lengths": lengths, "groups": groups, "rewards": rewards.tolist(),
        "loss": loss.item(), "grad_norms": {n: p.grad.norm().item() for n, p in rm.named_parameters()},
    }, indent=1))

    # DPO through a model: masked sequence log-probs of chosen/rejected rows.
    torch.manual_seed(12)
    lm = LlamaForCausalLM(config())
    lm.save_pretrained(OUT / "lm")
    torch.manual_seed(13)
    reference = LlamaForCausalLM(config())
    reference.save_pretrained(OUT / "ref")
    lengths = [11, 9, 12, 8]
    prompt = [4, 4, 6, 6]  # tokens before the response; the pairs share their prompt
    ids = rows(g, lengths, 12)
    ids[1, :4] = ids[0, :4]
    ids[3, :6] = ids[2, :6]
    inputs, targets = ids[:, :-1], ids[:, 1:]
    mask = torch.zeros_like(targets, dtype=torch.float32)
    for i, (n, p) in enumerate(zip(lengths, prompt)):
        mask[i, p - 1:n - 1] = 1.0  # targets at positions p..n-1 are the response tokens

    def logps(m):
        lp = torch.log_softmax(m(input_ids=inputs).logits, -1).gather(-1, targets.unsqueeze(-1))[..., 0]
        return (lp * mask).sum(-1)

    with torch.no_grad():
        ref_lp = logps(reference)
    pol_lp = logps(lm)
    loss, chosen, rejected = dpo(pol_lp, ref_lp, beta)
    loss.backward()
    grad_norms = {n: p.grad.norm().item() for n, p in lm.named_parameters()}
    # DPO plus the chosen responses' token-mean NLL, weighted (TRL's loss_type=["sigmoid", "sft"],
    # loss_weights=[1, sft_weight]; the RPO loss of Pang et al. 2024).
    sft_weight = 0.5
    lm.zero_grad()
    pol_lp = logps(lm)
    nll = -pol_lp[0::2].sum() / mask[0::2].sum()
    rpo = dpo(pol_lp, ref_lp, beta)[0] + sft_weight * nll
    rpo.backward()
    (OUT / "dpo.json").write_text(json.dumps({
        "ids": ids.tolist(), "lengths": lengths, "prompt": prompt, "beta": beta,
        "policy_logps": pol_lp.tolist(), "ref_logps": ref_lp.tolist(), "loss": loss.item(),
        "grad_norms": grad_norms,
        "sft_weight": sft_weight, "nll": nll.item(), "rpo_loss": rpo.item(),
        "rpo_grad_norms": {n: p.grad.norm().item() for n, p in lm.named_parameters()},
    }, indent=1))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
