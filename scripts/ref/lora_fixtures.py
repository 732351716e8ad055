"""Writes the LoRA reference (crates/cria-core/tests/fixtures/lora): a tiny random
LlamaForCausalLM, a PEFT LoRA adapter on all seven projections (r=4, alpha=8, B randomised so
the adapter matters), and what PEFT computes: logits, the causal-LM loss and each LoRA
parameter's gradient norm, plus the logits after merge_and_unload().

    .venv/bin/python scripts/ref/lora_fixtures.py   (needs peft as well)
"""

import json
import shutil
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = Path(__file__).resolve().parents[2] / "crates" / "cria-core" / "tests" / "fixtures" / "lora"
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    torch.manual_seed(11)
    shutil.rmtree(OUT, ignore_errors=True)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.2,
                      attn_implementation="eager")
    base = LlamaForCausalLM(cfg)
    base.save_pretrained(OUT / "base")
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=MODULES,
                                            task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    model.save_pretrained(OUT / "adapter")
    (OUT / "adapter" / "README.md").unlink()  # PEFT's model-card template; not ours to ship
    ids = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(5))
    logits = model(input_ids=ids[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), ids[:, 1:].reshape(-1))
    loss.backward()
    norms = {n.replace("base_model.model.", "").replace(".default", ""): p.grad.norm().item()
             for n, p in model.named_parameters() if p.requires_grad}
    merged = model.merge_and_unload()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids[:, :-1]).logits
    save_file({"input_ids": ids.contiguous(), "logits": logits.detach().contiguous(),
               "merged_logits": merged_logits.contiguous()}, OUT / "reference.safetensors")
    (OUT / "expected.json").write_text(json.dumps({"loss": loss.item(), "grad_norms": norms}, indent=1))
    print("loss", loss.item(), len(norms), "lora parameters")


if __name__ == "__main__":
    main()
