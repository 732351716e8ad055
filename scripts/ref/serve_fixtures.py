"""Writes the two tiny checkpoints `cria serve`'s tests run (crates/cria-serve/tests/fixtures/),
both with a byte-level BPE tokenizer trained here and Qwen2.5's chat template (ChatML, tools
rendered into the system turn, tool calls written as `<tool_call>{…}</tool_call>`):

- chat: a random LLaMA (2 layers, 256 positions) whose replies are arbitrary but real text, for
  sampling, stop strings, log-probabilities, several choices, streaming and limits;
- tool_caller: a LLaMA whose weights make greedy decoding follow a chain of bigrams: attention
  and MLP outputs are zero, so the last token alone picks the next (its embedding, normalised,
  against an lm_head row built from it). After the reply prompt (`…assistant\\n`) it writes
  `<tool_call>{"name": "lookup_order", "arguments": {"order": "A-1001"}}</tool_call><|im_end|>`,
  which the server must turn into `tool_calls`. transformers' own greedy generate is checked to
  write exactly that, from the prompt `apply_chat_template` renders with tools.

    .venv/bin/python scripts/ref/serve_fixtures.py
"""

import json
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "cria-serve" / "tests" / "fixtures"
QWEN = json.loads((ROOT / "crates/cria-data/tests/fixtures/templates/qwen2.5/tokenizer_config.json").read_text())
TEMPLATE = QWEN["chat_template"]
CALL = '{"name": "lookup_order", "arguments": {"order": "A-1001"}}'
TOOLS = [{"type": "function", "function": {
    "name": "lookup_order", "description": "Find an order by its number.",
    "parameters": {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}}}]

# Written for this fixture: enough words that the tokenizer learns some merges.
CORPUS = [
    "Orders ship within two working days. Returns are accepted for thirty days.",
    "The help desk answers questions about orders, returns, invoices and accounts.",
    "Where is my order? It left the warehouse yesterday and arrives on Monday.",
    "Please keep your order number ready when you call the help desk.",
] * 20


def tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.add_tokens(["<tool_call>", "</tool_call>", CALL])
    fast.chat_template = TEMPLATE
    return fast


def config(tok, **kw):
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    pad = tok.convert_tokens_to_ids("<|endoftext|>")
    return LlamaConfig(vocab_size=len(tok), eos_token_id=im_end, pad_token_id=pad, bos_token_id=None,
                       rms_norm_eps=1e-6, tie_word_embeddings=False, attn_implementation="eager", **kw)


def save(model, tok, name):
    d = OUT / name
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def chat(tok):
    torch.manual_seed(11)
    cfg = config(tok, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.4)
    return save(LlamaForCausalLM(cfg).eval(), tok, "chat")


def tool_caller(tok):
    torch.manual_seed(5)
    h = 64
    cfg = config(tok, hidden_size=h, intermediate_size=8, num_hidden_layers=1, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=2048)
    model = LlamaForCausalLM(cfg).eval()
    ids = tok.convert_tokens_to_ids
    newline = tok.encode("\n", add_special_tokens=False)
    assert len(newline) == 1
    chain = [newline[0], ids("<tool_call>"), ids(CALL), ids("</tool_call>"), ids("<|im_end|>")]
    with torch.no_grad():
        emb = torch.nn.functional.normalize(torch.randn(len(tok), h), dim=1)
        model.model.embed_tokens.weight.copy_(emb)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        head = torch.zeros(len(tok), h)
        for a, b in zip(chain, chain[1:]):
            head[b] += 4.0 * emb[a]
        model.lm_head.weight.copy_(head)
    d = save(model, tok, "tool_caller")
    # What transformers does with it: the prompt a client's request renders, greedy.
    tok2 = AutoTokenizer.from_pretrained(d)
    m2 = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    messages = [{"role": "user", "content": "Where is order A-1001?"}]
    x = tok2.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True, return_tensors="pt",
                                 return_dict=True)
    out = m2.generate(**x, max_new_tokens=8, do_sample=False)
    reply = tok2.decode(out[0, x["input_ids"].shape[1]:], skip_special_tokens=False)
    assert reply == f"<tool_call>{CALL}</tool_call><|im_end|>", reply
    (d / "expected.json").write_text(json.dumps({"messages": messages, "tools": TOOLS, "reply": reply,
                                                 "prompt_ids": x["input_ids"][0].tolist()}, indent=1))


def main():
    tok = tokenizer()
    chat(tok)
    tool_caller(tok)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
