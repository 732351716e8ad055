"""Writes tokenizers in the styles users' checkpoints ship, with the ids transformers'
AutoTokenizer gives, for cria's tokenizer tests (crates/cria-core/tests/fixtures/tokenizers/):

- gpt2: byte-level BPE (ByteLevel pre-tokenizer), and the same file without a pre-tokenizer
  under GPT2Tokenizer (which puts one back) and as a plain fast tokenizer (which does not);
- llama2: SentencePiece-style BPE with byte fallback as LLaMA-2/TinyLlama ship it (Prepend +
  Replace normalizer, no pre-tokenizer) under LlamaTokenizer, whose constructor rebuilds the
  pipeline (Metaspace, no normalizer): with the default, `legacy: true` and
  `add_prefix_space: false`; and a Metaspace file;
- llama3: a GPT-4-style regex split then byte-level BPE with a BOS template, its chat
  tokens only in tokenizer_config.json's `added_tokens_decoder` (the token that ends a reply
  must still be one id);
- qwen2: Qwen's regex split under Qwen2Tokenizer, `<|im_end|>` added by the config;
- gemma: a Gemma-style file under GemmaTokenizer.

Every case writes tokenizer.json, tokenizer_config.json and expected.json (ids with and
without special tokens, decodes, and for a config with a chat template the ids of
`apply_chat_template(tokenize=True)`).

    .venv/bin/python scripts/ref/tokenizer_fixtures.py
"""

import copy
import json
import shutil
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer

OUT = Path(__file__).resolve().parents[2] / "crates" / "cria-core" / "tests" / "fixtures" / "tokenizers"

# Written for this project: a few sentences of the harbour town the examples use.
CORPUS = [
    "The harbour of Saltmere opens at dawn, and the boats go out.",
    "Jory Stone is the smith; he mends anchors and chains for 12 coins.",
    "Who keeps the lighthouse? Maren does, every night of the year.",
    "On Friday the sea was calm and the nets came back full of herring.",
    "user: where is the market?\nassistant: by the quay, next to the inn.",
] * 30

TEXTS = [
    "The harbour opens",
    " The  harbour opens",
    "the smith</s>mends chains",
    "the smith </s> mends",
    "<s>Saltmere",
    "\nnets\n\nboats",
    "héllo 🙂 12345 coins",
    "a<|endoftext|>b",
    "<|im_start|>user\nhi<|im_end|>\n",
    "<|begin_of_text|><|eot_id|>hi",
    "Maren <|eot_id|> Jory",
    "",
]

CHAT = [
    {"role": "system", "content": "You help at the harbour."},
    {"role": "user", "content": "Who is the smith?"},
    {"role": "assistant", "content": "Jory Stone."},
    {"role": "user", "content": "And the lighthouse?"},
]

LLAMA3_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_level(pre, specials, vocab=400):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return json.loads(tok.to_str())


def gpt2():
    j = byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False), ["<|endoftext|>"])
    j["post_processor"] = json.loads(processors.ByteLevel(trim_offsets=False).__getstate__())
    bare = copy.deepcopy(j)
    bare["pre_tokenizer"] = None
    eot = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    return [
        ("gpt2_fast", j, {"tokenizer_class": "PreTrainedTokenizerFast", **eot}),
        ("gpt2_no_pre_tokenizer", bare, {"tokenizer_class": "PreTrainedTokenizerFast", **eot}),
        ("gpt2_no_pre_tokenizer_gpt2_class", bare, {"tokenizer_class": "GPT2Tokenizer"}),
    ]


def llama2():
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.train_from_iterator(CORPUS, trainer=trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                                 show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1",
                                                       special_tokens=[("<s>", 1)])
    j = json.loads(tok.to_str())
    # As TinyLlama ships it: only <unk>, <s>, </s> are added tokens; byte tokens are vocabulary.
    j["added_tokens"] = [t for t in j["added_tokens"] if t["content"] in ("<unk>", "<s>", "</s>")]
    meta = copy.deepcopy(j)
    meta["normalizer"] = None
    meta["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    base = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    return [
        ("llama2", j, base),
        ("llama2_legacy", j, {**base, "legacy": True}),
        ("llama2_no_prefix_space", j, {**base, "add_prefix_space": False}),
        ("llama2_metaspace_fast", meta, {**base, "tokenizer_class": "PreTrainedTokenizerFast"}),
    ]


def llama3():
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    j = byte_level(pre, ["<|begin_of_text|>", "<|end_of_text|>"])
    bos = j["added_tokens"][0]["id"]
    j["post_processor"] = {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [bos],
                                                                     "tokens": ["<|begin_of_text|>"]}}}
    vocab = len(j["model"]["vocab"]) + len(j["added_tokens"])
    tok = lambda c: {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                     "special": True}
    chat = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    decoder = {str(t["id"]): tok(t["content"]) for t in j["added_tokens"]}
    decoder.update({str(vocab + i): tok(c) for i, c in enumerate(chat)})
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
           "eos_token": "<|eot_id|>", "added_tokens_decoder": decoder, "chat_template": LLAMA3_TEMPLATE}
    return [("llama3_specials_in_config", j, cfg)]


def qwen2():
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    j = byte_level(pre, ["<|endoftext|>", "<|im_start|>"])
    j["normalizer"] = {"type": "NFC"}
    cfg = {"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
           "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "chat_template": QWEN_TEMPLATE}
    return [("qwen2", j, cfg)]


def gemma():
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.train_from_iterator(CORPUS, trainer=trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                                 show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B:1",
                                                       special_tokens=[("<bos>", 2)])
    j = json.loads(tok.to_str())
    j["added_tokens"] = [t for t in j["added_tokens"] if not t["content"].startswith("<0x")]
    return [("gemma", j, {"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>"})]


def write(name, tokenizer_json, cfg):
    d = OUT / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    (d / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False, indent=1))
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=1))
    t = AutoTokenizer.from_pretrained(d)
    cases = []
    for text in TEXTS:
        ids = t(text)["input_ids"]
        cases.append({"text": text, "ids": ids, "ids_no_special": t(text, add_special_tokens=False)["input_ids"],
                      "decode": t.decode(ids), "decode_skip_special": t.decode(ids, skip_special_tokens=True)})
    expected = {"class": type(t).__name__, "bos": t.bos_token, "eos": t.eos_token, "cases": cases}
    if t.chat_template:
        for gen in (True, False):
            msgs = CHAT if gen else CHAT + [{"role": "assistant", "content": "Maren keeps it."}]
            expected[f"chat_generation_prompt_{str(gen).lower()}"] = {
                "messages": msgs,
                "rendered": t.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen),
                "ids": t.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen)["input_ids"],
            }
    (d / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=1))
    print(name, type(t).__name__, len(t))


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    for cases in (gpt2(), llama2(), llama3(), qwen2(), gemma()):
        for name, j, cfg in cases:
            write(name, j, cfg)


if __name__ == "__main__":
    main()
