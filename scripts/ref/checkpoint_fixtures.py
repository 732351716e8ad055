"""Writes tiny checkpoints laid out as the ecosystem writes them, with the logits transformers
computes, for cria's loading tests (crates/cria-core/tests/fixtures/):

- llama_tied_lm_head: a tied LLaMA saved by `safetensors.torch.save_model`, which keeps the
  shared tensor once, as `lm_head.weight`, and names the alias in the file's metadata
  (`{"model.embed_tokens.weight": "lm_head.weight"}`);
- llama_tied_lm_head_only: the same tensors with that metadata gone (only `lm_head.weight`);
- rm_pad_is_eos: a `LlamaForSequenceClassification` whose pad id is its end-of-sequence id,
  with the scores transformers gives rows that end in that token, right-padded with it, and
  one left-padded (transformers reads the rightmost token that is not the pad id);
- base_no_chat_tokens: a base LLaMA as TinyLlama ships it (SentencePiece-style tokenizer from
  tokenizer_fixtures.py's llama2 case, `<s>`/`</s>` only, no chat template, no chat tokens),
  saved with `save_pretrained`: what `cria sft` must grow cria's chat tokens into.

    .venv/bin/python scripts/ref/checkpoint_fixtures.py
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file, save_model
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig,
                          LlamaForCausalLM, LlamaForSequenceClassification)

OUT = Path(__file__).resolve().parents[2] / "crates" / "cria-core" / "tests" / "fixtures"
CRIA_TEMPLATE = Path(__file__).resolve().parents[2] / "crates" / "cria-data" / "src" / "chat_template.jinja"
CRIA_CHAT_TOKENS = ["<|begin_of_text|>", "<|end_of_turn|>", "<|system|>", "<|user|>", "<|assistant|>"]
VOCAB, T = 96, 12
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              rms_norm_eps=1e-5, initializer_range=0.3, attn_implementation="eager")


def ids():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (2, T), generator=g)


def reference(d, x):
    """The logits transformers computes after loading the directory as a user would."""
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        logits = model(input_ids=x).logits.float()
    save_file({"input_ids": x.to(torch.int64).contiguous(), "logits": logits.contiguous()},
              d / "reference.safetensors")


def tied_as_lm_head():
    torch.manual_seed(7)
    model = LlamaForCausalLM(LlamaConfig(**COMMON, tie_word_embeddings=True)).eval()
    d = OUT / "llama_tied_lm_head"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    model.config.save_pretrained(d)
    save_model(model, str(d / "model.safetensors"))
    with safe_open(d / "model.safetensors", "pt") as f:
        assert "lm_head.weight" in f.keys() and "model.embed_tokens.weight" not in f.keys()
        assert f.metadata()["model.embed_tokens.weight"] == "lm_head.weight", f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    x = ids()
    reference(d, x)
    bare = OUT / "llama_tied_lm_head_only"
    shutil.rmtree(bare, ignore_errors=True)
    bare.mkdir(parents=True)
    model.config.save_pretrained(bare)
    save_file(tensors, bare / "model.safetensors", metadata={"format": "pt"})
    reference(bare, x)
    print(d.name, bare.name, "->", sorted(tensors)[:2], "...")


def reward_pooling():
    torch.manual_seed(11)
    eos = 2
    cfg = LlamaConfig(**COMMON, tie_word_embeddings=False, num_labels=1, pad_token_id=eos, eos_token_id=eos,
                      bos_token_id=1)
    model = LlamaForSequenceClassification(cfg).eval()
    d = OUT / "rm_pad_is_eos"
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d)
    ids = torch.tensor([
        [1, 5, 6, 7, 8, eos],          # ends in EOS == pad: scored at 8
        [1, 9, 10, eos, eos, eos],     # EOS then padding: scored at 10
        [1, 11, 12, 13, eos, eos],     # no EOS, right-padded: scored at 13
        [1, 14, eos, 15, 16, 17],      # an EOS inside: the last token counts
        [eos, eos, 1, 18, 19, 20],     # left-padded: scored at 20
    ])
    reloaded = AutoModelForSequenceClassification.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        scores = reloaded(input_ids=ids).logits[:, 0].float()
    save_file({"input_ids": ids.to(torch.int64).contiguous(), "scores": scores.contiguous()},
              d / "reference.safetensors")
    print(d.name, "->", scores.tolist())


def base_without_chat_tokens():
    """Needs tokenizer_fixtures.py's output (the llama2 tokenizer)."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(OUT / "tokenizers" / "llama2")
    assert tok.chat_template is None
    torch.manual_seed(13)
    cfg = LlamaConfig(**{**COMMON, "vocab_size": len(tok), "max_position_embeddings": 256},
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg).eval()
    d = OUT / "base_no_chat_tokens"
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    # What transformers renders once cria's chat tokens are added (in cria's order, as
    # `cria sft` adds them) and cria's template set: the ids cria must train and prompt with.
    tok.add_special_tokens({"additional_special_tokens": CRIA_CHAT_TOKENS})
    tok.chat_template = CRIA_TEMPLATE.read_text().rstrip()
    conversation = [{"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": "Where is the market?"},
                    {"role": "assistant", "content": "By the quay."},
                    {"role": "user", "content": "Who keeps the lighthouse?"}]
    expected = {"added": {t: tok.convert_tokens_to_ids(t) for t in CRIA_CHAT_TOKENS},
                "messages": conversation,
                "ids": tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                               return_dict=False)}
    (d / "expected_chat.json").write_text(json.dumps(expected, indent=1))
    print(d.name, "->", len(tok), "tokens, eos", tok.eos_token)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tied_as_lm_head()
    reward_pooling()
    base_without_chat_tokens()


if __name__ == "__main__":
    main()
