"""Renders conversations with transformers' apply_chat_template using cria's tokenizer and
chat template (crates/cria-data/tests/fixtures/chat, a tokenizer `cria tokenizer train` wrote
for the Saltmere corpus plus crates/cria-data/src/chat_template.jinja), and writes the ids the
Rust test compares cria's own rendering with.

    .venv/bin/python scripts/ref/chat_fixtures.py
"""

import json
from pathlib import Path

from transformers import AutoTokenizer

D = Path(__file__).resolve().parents[2] / "crates" / "cria-data" / "tests" / "fixtures" / "chat"

CONVERSATIONS = [
    [{"role": "user", "content": "Who keeps the lighthouse?"},
     {"role": "assistant", "content": "Ada Finch keeps it."}],
    [{"role": "system", "content": "Answer in one line."},
     {"role": "user", "content": "What does Bram bake?\nTell me."},
     {"role": "assistant", "content": " Bread, every day. "},
     {"role": "user", "content": "And on Sunday?"},
     {"role": "assistant", "content": "He rests."}],
]


def render_cases(tok, conversations=CONVERSATIONS):
    """Each conversation rendered whole, and without its last reply plus the reply prompt."""
    def render(msgs, gen):
        return list(tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen,
                                            return_dict=True)["input_ids"])
    return [{"messages": conv, "text": tok.apply_chat_template(conv, tokenize=False),
             "ids": render(conv, False), "prompt_ids": render(conv[:-1], True)} for conv in conversations]


def main():
    tok = AutoTokenizer.from_pretrained(D)
    cases = render_cases(tok)
    (D / "expected.json").write_text(json.dumps(cases, indent=1))
    print("wrote", len(cases), "cases")
    chatml()
    alpaca()


ALPACA_CONVERSATIONS = [
    [{"role": "user", "content": "Name the harbour master."},
     {"role": "assistant", "content": "Ada Finch is the harbour master."}],
    [{"role": "user", "content": "Summarise the note.", "input": "The ferry leaves at nine.\nIt returns at six."},
     {"role": "assistant", "content": "The ferry runs from nine to six."}],
    [{"role": "system", "content": "You answer questions about Saltmere."},
     {"role": "user", "content": "What does Bram bake?"},
     {"role": "assistant", "content": " Bread, every day. "}],
]


def alpaca():
    """The Alpaca prompt (crates/cria-data/src/alpaca_template.jinja) as transformers renders it,
    the Alpaca `input` passed as an extra message key."""
    d = D.parent / "chat_alpaca"
    d.mkdir(exist_ok=True)
    (d / "tokenizer.json").write_text((D / "tokenizer.json").read_text())
    cfg = json.loads((D / "tokenizer_config.json").read_text())
    cfg["chat_template"] = (D.parents[2] / "src" / "alpaca_template.jinja").read_text().rstrip()
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    tok = AutoTokenizer.from_pretrained(d)
    cases = render_cases(tok, ALPACA_CONVERSATIONS)
    (d / "expected.json").write_text(json.dumps(cases, indent=1))


CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def chatml():
    """A checkpoint that ships its own (ChatML-style) template: transformers' rendering of it."""
    d = D.parent / "chat_chatml"
    d.mkdir(exist_ok=True)
    (d / "tokenizer.json").write_text((D / "tokenizer.json").read_text())
    cfg = json.loads((D / "tokenizer_config.json").read_text())
    cfg["chat_template"] = CHATML
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    tok = AutoTokenizer.from_pretrained(d)
    cases = render_cases(tok)
    (d / "expected.json").write_text(json.dumps(cases, indent=1))


if __name__ == "__main__":
    main()
