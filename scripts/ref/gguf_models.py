"""Makes the two transformers checkpoints scripts/check_gguf.py exports to GGUF besides cria's
demo model: a LLaMA 3-style and a Qwen2-style model, each with a byte-level BPE tokenizer
trained here on the demo world's handbook with that family's pre-tokenizer regex, special
tokens and chat template (scripts/ref/templates). Weights are random (seeded) with a wide
initialisation so greedy decoding has clear winners. `--size 100m` makes the ~100M-parameter
LLaMA the decode benchmark uses, `--size 1b` one of TinyLlama 1.1B's shape for the edge profile
(about 9 GB of memory to make and export).

    .venv/bin/python scripts/ref/gguf_models.py OUT_DIR [--size tiny|100m|1b]
"""

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

ROOT = Path(__file__).resolve().parents[2]
LLAMA3_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def texts():
    corpus = ROOT / "runs/demo/world/corpus"
    if not corpus.exists():
        raise SystemExit("run `cria demo` (or `cria world --out runs/demo/world`) first: the tokenizers train on its handbook")
    for p in sorted(corpus.glob("*.md")):
        yield from p.read_text().split("\n\n")


def bpe(regex, specials, vocab_size, nfc):
    tok = Tokenizer(models.BPE(ignore_merges=regex == LLAMA3_RE))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts(), trainer)
    return tok


def save(model, tok, template, out, **special):
    torch.manual_seed(0)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    fast.chat_template = template
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)
    print(out, sum(p.numel() for p in model.parameters()), "parameters")


SIZES = {
    "fixture": (dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2), 320),
    "tiny": (dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4), 2048),
    # TinyLlama 1.1B's shape (its 32,000-row vocabulary padded past the tokenizer trained here).
    "1b": (dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4), 8192),
    "100m": (dict(hidden_size=768, intermediate_size=2560, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4), 8192),
}


def llama(out, size):
    dims, vocab = SIZES[size]
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = bpe(LLAMA3_RE, specials, vocab, nfc=False)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B", special_tokens=[("<|begin_of_text|>", bos)]
    )
    cfg = LlamaConfig(
        vocab_size=32000 if size == "1b" else tok.get_vocab_size(),
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        initializer_range=0.08 if size != "fixture" else 0.15,
        bos_token_id=bos,
        eos_token_id=tok.token_to_id("<|eot_id|>"),
        **dims,
    )
    torch.manual_seed(1)
    model = LlamaForCausalLM(cfg).eval()
    template = (ROOT / "scripts/ref/templates/llama3.jinja").read_text()
    save(model, tok, template, out, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


def qwen2(out, size="tiny"):
    dims, vocab = SIZES[size]
    dims = dict(dims, num_key_value_heads=2)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = bpe(QWEN2_RE, specials, vocab, nfc=True)
    n = tok.get_vocab_size()
    cfg = Qwen2Config(
        # Padded past the tokenizer, as Qwen2's own embedding tables are.
        vocab_size=n // 64 * 64 + 64,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        initializer_range=0.08 if size != "fixture" else 0.15,
        bos_token_id=None,
        eos_token_id=tok.token_to_id("<|im_end|>"),
        use_sliding_window=False,
        **dims,
    )
    torch.manual_seed(2)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        # transformers initialises biases to zero; random ones check they land where they belong.
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0.0, 0.1)
    template = (ROOT / "scripts/ref/templates/qwen2.5.jinja").read_text()
    save(model, tok, template, out, eos_token="<|im_end|>", pad_token="<|endoftext|>")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", choices=["tiny", "100m", "1b"], default="tiny")
    a = ap.parse_args()
    if a.size in ("100m", "1b"):
        llama(a.out / f"llama-{a.size}", a.size)
    else:
        llama(a.out / "llama", "tiny")
        qwen2(a.out / "qwen2")
