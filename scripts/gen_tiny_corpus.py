"""Writes examples/tiny/corpus: a small, deterministic corpus about a fictional harbour town,
written for cria so the README's first run trains on text the project owns. Regenerate with
`python3 scripts/gen_tiny_corpus.py` (standard library only)."""

import random
from pathlib import Path

rng = random.Random(20261127)

PEOPLE = [
    ("Ada Finch", "she", "lighthouse keeper"), ("Bram Oakes", "he", "baker"),
    ("Cleo Marsh", "she", "harbour master"), ("Dov Penn", "he", "net mender"),
    ("Esme Vale", "she", "schoolteacher"), ("Finn Hale", "he", "boat builder"),
    ("Gwen Lark", "she", "doctor"), ("Hugo Reed", "he", "innkeeper"),
    ("Iris Moss", "she", "librarian"), ("Jory Stone", "he", "smith"),
    ("Kit Rowe", "she", "ferry pilot"), ("Lev Wren", "he", "cheesemaker"),
]
PLACES = ["the lighthouse", "the bakery", "the harbour", "the net shed", "the school",
          "the boatyard", "the clinic", "the Anchor Inn", "the library", "the forge",
          "the ferry dock", "the dairy"]
THINGS = ["bread", "rope", "lamps", "boats", "books", "cheese", "nails", "maps", "tea",
          "apples", "fish", "candles", "sails", "kettles"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WEATHER = ["calm", "windy", "foggy", "rainy", "bright", "stormy", "cold", "warm"]
COLOURS = ["red", "blue", "green", "yellow", "white", "grey", "brown"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"]


def person_facts(i):
    name, pron, job = PEOPLE[i]
    place = PLACES[i]
    first = name.split()[0]
    poss = "her" if pron == "she" else "his"
    lines = [
        f"{name} is the {job} of Saltmere. {pron.capitalize()} works at {place}.",
        f"Every {DAYS[i % 7]}, {first} walks to the market to buy {THINGS[i % len(THINGS)]}.",
        f"{first} has a {COLOURS[i % len(COLOURS)]} door and a cat named {['Pip', 'Moss', 'Tam', 'Bo'][i % 4]}.",
        f"When the weather is {WEATHER[i % len(WEATHER)]}, {first} stays near {place} and mends {poss} tools.",
    ]
    return lines


def scene():
    a, b = rng.sample(range(len(PEOPLE)), 2)
    (na, pa, ja), (nb, pb, jb) = PEOPLE[a], PEOPLE[b]
    fa, fb = na.split()[0], nb.split()[0]
    day, weather = rng.choice(DAYS), rng.choice(WEATHER)
    thing, n = rng.choice(THINGS), rng.choice(NUMBERS)
    templates = [
        f"On {day} the sea was {weather}. {fa} the {ja} met {fb} at {PLACES[b]}. "
        f"{fb} gave {fa} {n} {thing}, and {fa} said thank you.",
        f"It was a {weather} {day} in Saltmere. {fa} asked {fb} for {n} {thing}. "
        f"\"Come back tomorrow,\" said {fb}, \"and I will have them ready.\"",
        f"{fa} and {fb} drank tea at the Anchor Inn on {day}. They talked about the {weather} weather "
        f"and about the {n} {thing} that came in on the ferry.",
        f"The ferry came in on a {weather} {day}. Kit Rowe steered it past the lighthouse, "
        f"and {fa} carried {n} crates of {thing} up to {PLACES[a]}.",
    ]
    return rng.choice(templates)


def main():
    out = Path(__file__).resolve().parent.parent / "examples" / "tiny" / "corpus"
    out.mkdir(parents=True, exist_ok=True)
    facts = [line for i in range(len(PEOPLE)) for line in person_facts(i)]
    for k in range(4):
        paras = []
        for _ in range(220):
            body = [scene() for _ in range(rng.randint(2, 4))]
            if rng.random() < 0.5:
                body.append(rng.choice(facts))
            paras.append(" ".join(body))
        (out / f"saltmere-{k + 1}.txt").write_text("\n\n".join(paras) + "\n")
    (out / "people.md").write_text("# People of Saltmere\n\n" + "\n".join(f"- {f}" for f in facts) + "\n")
    write_instructions(out.parent)


def qa_pairs():
    """Questions about the people of Saltmere with short answers, in several phrasings."""
    pairs = []
    for i, (name, pron, job) in enumerate(PEOPLE):
        first = name.split()[0]
        place = PLACES[i]
        cat = ["Pip", "Moss", "Tam", "Bo"][i % 4]
        pairs += [
            (f"What is {name}'s job?", f"{name} is the {job} of Saltmere."),
            (f"Who is the {job} of Saltmere?", f"The {job} is {name}."),
            (f"Where does {first} work?", f"{first} works at {place}."),
            (f"What is the name of {first}'s cat?", f"{first}'s cat is named {cat}."),
            (f"What colour is {first}'s door?", f"{first} has a {COLOURS[i % len(COLOURS)]} door."),
            (f"On which day does {first} go to the market?", f"{first} goes to the market every {DAYS[i % 7]}."),
        ]
    return pairs


def write_instructions(root):
    """examples/tiny/sft.jsonl (chat records) and sft-val.jsonl: one held-out phrasing per
    person, so validation asks questions the model was not tuned on verbatim. One training
    answer in four ends with the kind closing " Glad to help!", so the tuned model says it
    sometimes; preference tuning (prefs.jsonl) should make it the rule."""
    train, val = [], []
    for k, (q, a) in enumerate(qa_pairs()):
        held_out = k % 6 == (k // 6) % 6
        if not held_out and len(train) % 4 == 0:
            a = f"{a} Glad to help!"
        rec = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        (val if held_out else train).append(rec)
    import json
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (root / "sft-val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
    write_preferences(root)


VAGUE = ["I am not sure.", "It could be many things.", "Hard to say."]
RUDE = ["Ask someone else.", "Figure it out yourself.", "Why would I tell you?"]


def write_preferences(root):
    """examples/tiny/prefs.jsonl and prefs-val.jsonl: for each question (same train/held-out
    split as SFT), four answers ranked as a careful labeller would: the right answer said
    kindly ("... Glad to help!") above the plain right answer, above a vague one, above a rude
    one. The kind closing is the property DPO and PPO should learn to add."""
    import json
    prng = random.Random(7)
    train, val = [], []
    for k, (q, a) in enumerate(qa_pairs()):
        answers = [f"{a} Glad to help!", a, prng.choice(VAGUE), prng.choice(RUDE)]
        order = list(range(4))
        prng.shuffle(order)  # responses in a random order; `ranking` lists them best first
        rec = {"prompt": q, "responses": [answers[i] for i in order],
               "ranking": [order.index(i) for i in range(4)]}
        (val if k % 6 == (k // 6) % 6 else train).append(rec)
    (root / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (root / "prefs-val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))


if __name__ == "__main__":
    main()
