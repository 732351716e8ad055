"""Writes the PPO references (crates/cria-train/tests/fixtures/ppo_ref.json), computed in PyTorch
on fixed tensors:

* GAE (gamma 0.99, lambda 0.95) on a fixed 6-token trajectory: advantages and returns;
* InstructGPT's KL-penalised per-token rewards (beta 0.1, score at the last token);
* masked whitening (unbiased variance, with and without keeping the mean);
* the clipped policy loss (epsilon 0.2) on a masked (2, 5) batch with its gradient and the
  clipped fraction; the clipped value loss (epsilon 0.2) with its gradient.

    .venv/bin/python scripts/ref/ppo_fixtures.py
"""

import json
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[2] / "crates" / "cria-train" / "tests" / "fixtures" / "ppo_ref.json"


def gae(rewards, values, gamma, lam):
    adv, last = [], 0.0
    for t in reversed(range(len(rewards))):
        nxt = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * nxt - values[t]
        last = delta + gamma * lam * last
        adv.append(last)
    adv = torch.stack(adv[::-1])
    return adv, adv + values


def masked_mean(x, m):
    return (x * m).sum() / m.sum()


def whiten(x, m, shift_mean):
    mean = masked_mean(x, m)
    var = masked_mean((x - mean) ** 2, m) * m.sum() / (m.sum() - 1)
    w = (x - mean) * torch.rsqrt(var + 1e-8)
    return torch.where(m > 0, w if shift_mean else w + mean, x)


def main():
    out = {}
    r = torch.tensor([0.1, -0.2, 0.05, 0.0, -0.1, 1.3])
    v = torch.tensor([0.5, 0.4, 0.6, 0.55, 0.7, 0.9])
    adv, ret = gae(r, v, 0.99, 0.95)
    out["gae"] = {"rewards": r.tolist(), "values": v.tolist(), "gamma": 0.99, "lam": 0.95,
                  "advantages": adv.tolist(), "returns": ret.tolist()}

    logp = torch.tensor([-1.2, -0.4, -2.0, -0.9])
    ref = torch.tensor([-1.0, -0.6, -2.5, -0.9])
    beta, score = 0.1, 2.5
    rw = -beta * (logp - ref)
    rw[-1] += score
    out["kl_rewards"] = {"logp": logp.tolist(), "ref": ref.tolist(), "beta": beta, "score": score,
                         "rewards": rw.tolist()}

    x = torch.tensor([0.3, -1.0, 2.0, 0.7, 5.0, 1.1])
    m = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    out["whiten"] = {"x": x.tolist(), "mask": m.tolist(), "shifted": whiten(x, m, True).tolist(),
                     "kept_mean": whiten(x, m, False).tolist()}

    g = torch.Generator().manual_seed(3)
    old = -torch.rand(2, 5, generator=g) * 2
    new = (old + (torch.rand(2, 5, generator=g) - 0.5) * 0.8).requires_grad_()
    a = torch.randn(2, 5, generator=g)
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 0, 1, 1, 0]], dtype=torch.float32)
    ratio = torch.exp(new - old)
    l1, l2 = -a * ratio, -a * torch.clamp(ratio, 0.8, 1.2)
    loss = masked_mean(torch.max(l1, l2), mask)
    loss.backward()
    out["policy"] = {"logp": new.detach().flatten().tolist(), "old_logp": old.flatten().tolist(),
                     "adv": a.flatten().tolist(), "mask": mask.flatten().tolist(), "clip": 0.2,
                     "loss": loss.item(), "grad": new.grad.flatten().tolist(),
                     "clip_frac": masked_mean((l2 > l1).float(), mask).item()}

    vold = torch.randn(2, 5, generator=g)
    vnew = (vold + torch.randn(2, 5, generator=g) * 0.3).requires_grad_()
    rets = vold + torch.randn(2, 5, generator=g)
    clipped = vold + torch.clamp(vnew - vold, -0.2, 0.2)
    vl = 0.5 * masked_mean(torch.max((vnew - rets) ** 2, (clipped - rets) ** 2), mask)
    vl.backward()
    out["value"] = {"values": vnew.detach().flatten().tolist(), "old_values": vold.flatten().tolist(),
                    "returns": rets.flatten().tolist(), "mask": mask.flatten().tolist(), "clip": 0.2,
                    "loss": vl.item(), "grad": vnew.grad.flatten().tolist()}
    OUT.write_text(json.dumps(out, indent=1))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
