"""Writes chat-template fixtures for cria's template tests
(crates/cria-data/tests/fixtures/templates/): for each model family whose template users
meet (LLaMA-3.1, Qwen2.5 and Qwen3 with tools, Mistral, Gemma 3, Phi-3, Zephyr), a tiny
tokenizer holding the family's special tokens, a tokenizer_config.json with the family's
template, and the text and ids transformers' `apply_chat_template` gives several
conversations (multi-turn, with and without the generation prompt, tools, template
variables).

The templates in scripts/ref/templates/ are the families' published ones (their sources are
listed in scripts/ref/templates/SOURCES.md); everything else is written for cria.

    .venv/bin/python scripts/ref/chat_template_fixtures.py
"""

import json
import shutil
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer

HERE = Path(__file__).resolve().parent
OUT = HERE.parents[1] / "crates" / "cria-data" / "tests" / "fixtures" / "templates"

CORPUS = [
    "The harbour of Saltmere opens at dawn, and the boats go out.",
    "Jory Stone is the smith; he mends anchors and chains for 12 coins.",
    "Who keeps the lighthouse? Maren does, every night of the year.",
    "You help at the harbour. Answer briefly.",
] * 30

# family -> (template, bos, eos, end-of-turn token, other special tokens)
FAMILIES = {
    "llama3": ("llama3.jinja", "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>",
               ["<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|python_tag|>"]),
    "qwen2.5": ("qwen2.5.jinja", None, "<|im_end|>", "<|im_end|>",
                ["<|im_start|>", "<|endoftext|>", "<tool_call>", "</tool_call>"]),
    "qwen3": ("qwen3.jinja", None, "<|im_end|>", "<|im_end|>",
              ["<|im_start|>", "<|endoftext|>", "<tool_call>", "</tool_call>", "<think>", "</think>"]),
    "mistral": ("mistral.jinja", "<s>", "</s>", "</s>", ["[INST]", "[/INST]", "[AVAILABLE_TOOLS]",
                                                       "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]"]),
    "gemma3": ("gemma3.jinja", "<bos>", "<eos>", "<end_of_turn>", ["<start_of_turn>"]),
    "phi3": ("phi3.jinja", "<s>", "<|endoftext|>", "<|end|>", ["<|system|>", "<|user|>", "<|assistant|>"]),
    "zephyr": ("zephyr.jinja", "<s>", "</s>", "</s>", []),
}

SYSTEM = {"role": "system", "content": "You help at the harbour. Answer briefly."}
TURNS = [
    {"role": "user", "content": "Who is the smith?"},
    {"role": "assistant", "content": "Jory Stone."},
    {"role": "user", "content": "And the lighthouse?"},
    {"role": "assistant", "content": "Maren keeps it."},
]
TOOLS = [{"type": "function", "function": {
    "name": "price_of", "description": "The price of an item at the market, in coins.",
    "parameters": {"type": "object", "properties": {"item": {"type": "string", "description": "What to price."}},
                   "required": ["item"]}}}]


def cases(family):
    """(name, messages, add_generation_prompt, tools, variables)."""
    out = [
        ("system_two_turns", [SYSTEM] + TURNS, False, None, {}),
        ("system_prompting", [SYSTEM] + TURNS[:3], True, None, {}),
        ("no_system_two_turns", TURNS, False, None, {}),
        ("no_system_prompting", TURNS[:1], True, None, {}),
    ]
    if family in ("llama3", "qwen2.5", "qwen3"):
        out.append(("tools_prompting", [SYSTEM] + TURNS[:1], True, TOOLS, {}))
    if family == "llama3":
        out.append(("date_string", TURNS, False, None, {"date_string": "04 Dec 2026"}))
    if family == "qwen3":
        out.append(("no_thinking", TURNS[:3], True, None, {"enable_thinking": False}))
    return out


def tokenizer(d, bos, eos, eot, specials):
    specials = [s for s in dict.fromkeys([bos, eos, eot] + specials) if s]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainer=trainers.BpeTrainer(
        vocab_size=400, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.save(str(d / "tokenizer.json"))


def write(family):
    template, bos, eos, eot, specials = FAMILIES[family]
    d = OUT / family
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    tokenizer(d, bos, eos, eot, specials)
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos,
           "chat_template": (HERE / "templates" / template).read_text()}
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=1))
    t = AutoTokenizer.from_pretrained(d)
    expected = {"end_of_turn": eot, "cases": []}
    for name, msgs, gen, tools, variables in cases(family):
        kw = dict(add_generation_prompt=gen, tools=tools, **variables)
        expected["cases"].append({
            "name": name, "messages": msgs, "add_generation_prompt": gen, "tools": tools, "variables": variables,
            "rendered": t.apply_chat_template(msgs, tokenize=False, **kw),
            "ids": t.apply_chat_template(msgs, tokenize=True, **kw)["input_ids"],
        })
    (d / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=1))
    print(family, len(expected["cases"]), "cases")


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    for family in FAMILIES:
        write(family)


if __name__ == "__main__":
    main()
