"""Writes tiny random Hugging Face checkpoints and the logits transformers computes for them,
the reference cria's model parity tests compare against (crates/cria-core/tests/fixtures/).

Each model uses a large init range so that RoPE, masking and GQA mistakes change the logits
visibly; the Mistral model's sliding window is shorter than the test prompt.

    python3 -m venv .venv && .venv/bin/pip install -r scripts/ref/requirements.txt
    .venv/bin/python scripts/ref/model_fixtures.py
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Gemma3ForCausalLM, Gemma3TextConfig, Phi3Config, Phi3ForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

OUT = Path(__file__).resolve().parents[2] / "crates" / "cria-core" / "tests" / "fixtures"
VOCAB, T = 96, 12

COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5,
              initializer_range=0.3, attn_implementation="eager")


def ids():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (2, T), generator=g)


def write(name, model, dtype=None, shard=None, extra=None):
    d = OUT / name
    shutil.rmtree(d, ignore_errors=True)
    model.eval()
    # Biases default to zero; randomise them so a dropped bias shows.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.3)
    x = ids()
    with torch.no_grad():
        logits = model(input_ids=x).logits.float()
    if dtype is not None:
        model = model.to(dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(d, **kwargs)
    if dtype is not None:
        # The reference is what transformers computes in f32 from the rounded weights on disk
        # (reloading also recomputes the rotary inv_freq buffer, which .to(bf16) had rounded).
        reloaded = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32,
                                                        attn_implementation="eager")
        with torch.no_grad():
            logits = reloaded(input_ids=x).logits.float()
    save_file({"input_ids": x.to(torch.int64).contiguous(), "logits": logits.contiguous()},
              d / "reference.safetensors")
    if extra:
        extra(d)
    print(name, "->", sorted(p.name for p in d.iterdir()))


def old_spelling(src, dst):
    """The same model with the pre-v5 config keys (rope_theta, rope_scaling, torch_dtype)."""
    shutil.rmtree(OUT / dst, ignore_errors=True)
    shutil.copytree(OUT / src, OUT / dst)
    p = OUT / dst / "config.json"
    cfg = json.loads(p.read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    if rope.get("rope_type", "default") != "default":
        cfg["rope_scaling"] = rope
    cfg["torch_dtype"] = cfg.pop("dtype", "float32")
    p.write_text(json.dumps(cfg, indent=2))


def tokenizer_and_greedy(name):
    """A non-byte-level BPE tokenizer (whitespace pre-tokenizer, BOS added by a template
    post-processor, as LLaMA's is) fitted into the model's 96-token vocabulary, plus the ids
    transformers' tokenizer gives a prompt and the model's greedy continuation of it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers, decoders
    from transformers import PreTrainedTokenizerFast
    d = OUT / name
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"])
    text = ["the cat sat on the mat", "a dog ran to the park", "tea and bread at noon"] * 50
    tok.train_from_iterator(text, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
         "unk_token": "<unk>"}, indent=1))
    hf = PreTrainedTokenizerFast.from_pretrained(d)
    prompt = "the dog sat at the park"
    ids = hf(prompt)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    (d / "greedy.json").write_text(json.dumps(
        {"prompt": prompt, "prompt_ids": ids, "greedy_ids": out[0, len(ids):].tolist()}, indent=1))


def greedy_ids(name):
    """transformers' greedy continuation of fixed prompt ids (no tokenizer needed)."""
    d = OUT / name
    ids = [1, 17, 42, 5, 63, 8, 29]
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    (d / "greedy.json").write_text(json.dumps(
        {"prompt_ids": ids, "greedy_ids": out[0, len(ids):].tolist()}, indent=1))


def grad_norms(name):
    """The next-token loss on the reference ids and each parameter's gradient norm (names as
    transformers has them: Phi-3's fused projections whole, a tied embedding once)."""
    d = OUT / name
    from safetensors.torch import load_file
    x = load_file(d / "reference.safetensors")["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    model.train()
    logits = model(input_ids=x[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
    loss.backward()
    (d / "grads.json").write_text(json.dumps(
        {"loss": loss.item(), "grad_norms": {n: p.grad.norm().item() for n, p in model.named_parameters()}},
        indent=1))


def main():
    torch.manual_seed(1234)
    OUT.mkdir(parents=True, exist_ok=True)

    llama = LlamaForCausalLM(LlamaConfig(**COMMON, num_key_value_heads=2, tie_word_embeddings=False,
                                         rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                                          "factor": 8.0, "low_freq_factor": 1.0,
                                                          "high_freq_factor": 4.0,
                                                          "original_max_position_embeddings": 8}))
    write("llama", llama)
    tokenizer_and_greedy("llama")
    old_spelling("llama", "llama_old_config")

    qwen = Qwen2ForCausalLM(Qwen2Config(**COMMON, num_key_value_heads=1, tie_word_embeddings=True,
                                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}))
    write("qwen2_bf16", qwen, dtype=torch.bfloat16)

    mistral = MistralForCausalLM(MistralConfig(**COMMON, num_key_value_heads=2, sliding_window=5,
                                               tie_word_embeddings=False,
                                               rope_parameters={"rope_type": "default",
                                                                "rope_theta": 10000.0}))
    write("mistral_sharded", mistral, shard="40KB")

    # Qwen3: RMSNorm over each head's queries and keys before RoPE, a head_dim that is not
    # hidden_size / heads, tied embeddings as the small Qwen3 models ship.
    qwen3 = Qwen3ForCausalLM(Qwen3Config(**COMMON, num_key_value_heads=2, head_dim=24, tie_word_embeddings=True,
                                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}))
    with torch.no_grad():
        for n, p in qwen3.named_parameters():
            if n.endswith(("q_norm.weight", "k_norm.weight")):
                p.normal_(1.0, 0.5)  # ones by default: a dropped norm weight would not show
    write("qwen3", qwen3)
    greedy_ids("qwen3")
    grad_norms("qwen3")

    # Phi-3: q, k and v in one fused qkv_proj, gate and up in one gate_up_proj, a sliding window.
    phi3 = Phi3ForCausalLM(Phi3Config(**COMMON, num_key_value_heads=2, tie_word_embeddings=False, sliding_window=5,
                                      pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0}))
    write("phi3", phi3)
    greedy_ids("phi3")
    grad_norms("phi3")

    # SmolLM2 as HuggingFaceTB ships it: a LlamaForCausalLM whose config also carries
    # nanotron's markers (is_llama_config, rope_interleaved: false) and a transformers.js hint.
    smol_cfg = LlamaConfig(**COMMON, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                           bos_token_id=0, eos_token_id=0, pretraining_tp=1, is_llama_config=True,
                           rope_interleaved=False,
                           rope_parameters={"rope_type": "default", "rope_theta": 100000.0})
    setattr(smol_cfg, "transformers.js_config", {"kv_cache_dtype": {"q4f16": "float16", "fp16": "float16"}})
    write("smollm2", LlamaForCausalLM(smol_cfg))

    # Gemma 3: scaled embeddings, (1 + w) RMSNorms (four per block and q/k norms), GeGLU,
    # query_pre_attn_scalar, local sliding-window layers with their own RoPE base around a
    # global one with linear scaling (as the 4B+ models ship).
    gemma = Gemma3ForCausalLM(Gemma3TextConfig(
        **{**COMMON, "num_hidden_layers": 3}, num_key_value_heads=2, head_dim=24, query_pre_attn_scalar=32,
        sliding_window=5, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=1,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}))
    with torch.no_grad():
        for n, p in gemma.named_parameters():
            if n.endswith("norm.weight"):
                p.normal_(0.0, 0.5)  # zeros by default: a scale of 1 would hide a missing "1 +"
    write("gemma3", gemma)
    greedy_ids("gemma3")
    grad_norms("gemma3")


if __name__ == "__main__":
    main()
