"""Writes the critic-free RL references (crates/cria-train/tests/fixtures/rl_ref.json), computed
in PyTorch on fixed tensors, with the definitions TRL 1.16's RLOOTrainer and GRPOTrainer use:

* RLOO advantages (Ahmadian et al. 2024): reward = score - beta * sum_t (logp_old - logp_ref)
  over the reply's tokens, advantage = reward minus the mean of the other rewards of its group;
* GRPO advantages (Shao et al. 2024): (reward - group mean) / (group std, unbiased, + 1e-4), and
  the unscaled variant (Dr. GRPO);
* RLOO's loss: a reply-level ratio exp(sum_t (logp - logp_old)) clipped at 1 +- epsilon, the
  mean over replies of max(-A ratio, -A clip(ratio)), with its gradient;
* GRPO's loss: the token-level clipped surrogate plus beta times the k3 estimate of
  KL(pi || pi_ref), exp(ref - logp) - (ref - logp) - 1, a mean over all reply tokens of the
  batch (TRL's default `loss_type="dapo"`), with its gradient.

    .venv/bin/python scripts/ref/rl_fixtures.py
"""

import json
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[2] / "crates" / "cria-train" / "tests" / "fixtures" / "rl_ref.json"


def main():
    torch.set_default_dtype(torch.float64)
    g = torch.Generator().manual_seed(7)
    k, b, t = 3, 6, 5
    scores = torch.randn(b, generator=g) * 2
    scores[3:6] = 0.5  # a group whose replies all scored the same
    old = -torch.rand(b, t, generator=g) * 2
    ref = old + (torch.rand(b, t, generator=g) - 0.5) * 0.6
    mask = torch.ones(b, t)
    for r, n in enumerate([5, 3, 4, 2, 5, 1]):
        mask[r, n:] = 0
    mask[:, 0] = 0  # the prompt's last position is no reply token
    beta, clip = 0.05, 0.2

    kl = ((old - ref) * mask).sum(1)
    rewards = (scores - beta * kl).view(-1, k)
    rloo = (rewards - (rewards.sum(1, keepdim=True) - rewards) / (k - 1)).flatten()
    grouped = scores.view(-1, k)
    centred = grouped - grouped.mean(1, keepdim=True)
    grpo = (centred / (grouped.std(1, keepdim=True) + 1e-4)).flatten()

    new = (old + (torch.rand(b, t, generator=g) - 0.5) * 0.5).requires_grad_()
    adv = torch.tensor([1.5, -0.7, 0.2, -2.0, 0.9, 0.05])
    ratio = torch.exp(((new - old) * mask).sum(1))
    l1, l2 = -adv * ratio, -adv * torch.clamp(ratio, 1 - clip, 1 + clip)
    seq_loss = torch.max(l1, l2).mean()
    seq_loss.backward()
    seq_grad = new.grad.clone()
    seq_clip = (l2 > l1).double().mean()

    new.grad = None
    a = adv[:, None] * mask
    ratio = torch.exp(new - old)
    l1, l2 = -a * ratio, -a * torch.clamp(ratio, 1 - clip, 1 + clip)
    d = ref - new
    k3 = torch.exp(d) - d - 1
    per_token = torch.max(l1, l2) + beta * k3
    grpo_loss = (per_token * mask).sum() / mask.sum()
    grpo_loss.backward()

    flat = lambda x: x.detach().flatten().tolist()  # noqa: E731
    out = {
        "k": k, "beta": beta, "clip": clip,
        "scores": flat(scores), "old_logp": flat(old), "ref_logp": flat(ref), "mask": flat(mask),
        "rloo_advantages": flat(rloo), "grpo_advantages": flat(grpo),
        "grpo_advantages_unscaled": flat(centred),
        "logp": flat(new), "row_adv": flat(adv),
        "rloo_loss": seq_loss.item(), "rloo_grad": flat(seq_grad), "rloo_clip_frac": seq_clip.item(),
        "grpo_loss": grpo_loss.item(), "grpo_grad": flat(new.grad),
        "grpo_k3": ((k3 * mask).sum() / mask.sum()).item(),
    }
    OUT.write_text(json.dumps(out, indent=1))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
