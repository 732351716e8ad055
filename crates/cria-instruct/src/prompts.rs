//! The prompts a teacher gets and how its replies are read. The wording is this project's; the
//! shapes, sizes and limits are the published ones (Wang et al. 2022; Stanford Alpaca): 8
//! instructions in a numbered list for the model to continue, a few-shot yes/no for
//! classification, examples written input-first (or, for classification, label-first), and
//! Alpaca's 20 tasks per request in `###`-separated blocks with `<noinput>`.

use crate::seeds::{Instance, SeedTask};
use regex::Regex;
use std::sync::LazyLock;

/// The list's preamble.
const LIST_HEAD: &str = "Below is a numbered list of tasks that people at a company ask their \
assistant to do: summarising, drafting, classifying, extracting, explaining, planning, \
calculating and more. Every task is one self-contained instruction, different from the others.";

/// Instruction generation: `instructions` numbered, the next number open for the model.
pub fn instruction_list(instructions: &[String]) -> String {
    let mut p = format!("{LIST_HEAD}\n");
    for (i, inst) in instructions.iter().enumerate() {
        let one = inst.split_whitespace().collect::<Vec<_>>().join(" ");
        p.push_str(&format!("{}. {}\n", i + 1, one.trim_end_matches(':')));
    }
    p.push_str(&format!("{}.", instructions.len() + 1));
    p
}

/// What a chat model is told after the list (it answers rather than continues).
pub const CHAT_CONTINUE: &str = "\n\nContinue this list with new, different tasks: one per line, numbered from where the list stops, nothing else.";

static NUMBERED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^\s*\d+\s?[.)]\s+").expect("regex"));

/// The instructions in a continuation of the numbered list (its first item has no number:
/// the prompt ended with it), whitespace collapsed and the first letter upper-cased; with
/// `cut`, the reply ended at the length limit and its last item is dropped (the second value
/// says whether one was).
pub fn parse_list(reply: &str, cut: bool) -> (Vec<String>, Option<String>) {
    let mut items: Vec<String> = NUMBERED
        .split(reply)
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .map(|s| capitalise(&s))
        .collect();
    let dropped = if cut { items.pop() } else { None };
    (items, dropped)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Few-shot: is a task's answer one of a few fixed labels? `examples` are seed tasks.
pub fn is_classification(examples: &[&SeedTask], instruction: &str) -> String {
    let mut p = String::from(
        "Decide for each task whether its answer is one of a few fixed labels (a category, \
         yes or no, a choice from a list) or free text.\n\n",
    );
    for t in examples {
        let yes = if t.is_classification { "Yes" } else { "No" };
        p.push_str(&format!(
            "Task: {}\nFixed labels: {yes}\n\n",
            t.instruction.trim()
        ));
    }
    p.push_str(&format!("Task: {}\nFixed labels:", instruction.trim()));
    p
}

/// The classification answer: yes when the reply starts with it.
pub fn parse_yes(reply: &str) -> bool {
    reply.trim_start().to_lowercase().starts_with("yes")
}

/// Examples for a free-text task, input first: `examples` are seed tasks shown the same way.
pub fn input_first(examples: &[&SeedTask], instruction: &str) -> String {
    let mut p = String::from(
        "For each task, write examples: what a person gives the assistant (the input, or \
         \"None\" when the task needs nothing more) and the right answer (the output).\n\n",
    );
    for t in examples {
        p.push_str(&format!("Task: {}\n", t.instruction.trim()));
        for (i, x) in t.instances.iter().enumerate() {
            let input = if x.input.trim().is_empty() {
                "None"
            } else {
                x.input.trim()
            };
            p.push_str(&format!(
                "Example {}\nInput: {input}\nOutput: {}\n",
                i + 1,
                x.output.trim()
            ));
        }
        p.push('\n');
    }
    p.push_str(&format!("Task: {}\nExample 1\n", instruction.trim()));
    p
}

/// Examples for a classification task, label first (so every label gets an input, not only
/// the likeliest).
pub fn output_first(examples: &[&SeedTask], instruction: &str) -> String {
    let mut p = String::from(
        "For each classification task, name its possible labels and, for each label, an \
         input that has it.\n\n",
    );
    for t in examples {
        p.push_str(&format!("Task: {}\n", t.instruction.trim()));
        for x in &t.instances {
            p.push_str(&format!(
                "Class label: {}\nInput: {}\n",
                x.output.trim(),
                x.input.trim()
            ));
        }
        p.push('\n');
    }
    p.push_str(&format!("Task: {}\n", instruction.trim()));
    p
}

static EXAMPLE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"Example\s?\d*\.?").expect("regex"));
static OUTPUT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"Output\s*\d*\s*:").expect("regex"));
static INPUT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"Input\s*\d*\s*:").expect("regex"));
static INPUT_START: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^Input\s*\d*\s*:").expect("regex"));

/// An example's input and output (no `Output:` at all: the whole text is the output).
fn input_output(text: &str) -> (String, String) {
    let (input, output) = match OUTPUT.find(text) {
        Some(m) => (text[..m.start()].trim(), text[m.end()..].trim()),
        None => ("", text.trim()),
    };
    // A second input begins a second example the model ran on into.
    let output = INPUT
        .find(output)
        .map_or(output, |m| output[..m.start()].trim());
    let input = INPUT_START.replace(input, "").trim().to_string();
    let input = if input.eq_ignore_ascii_case("none") {
        String::new()
    } else {
        input
    };
    (input, output.to_string())
}

/// The examples of an input-first reply (the last dropped when the reply was cut).
pub fn parse_input_first(reply: &str, cut: bool) -> Vec<Instance> {
    let text = reply.trim();
    let mut out: Vec<Instance> = if EXAMPLE.is_match(text) || text.starts_with("Input") {
        EXAMPLE
            .split(text)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (input, output) = input_output(s);
                Instance { input, output }
            })
            .collect()
    } else if OUTPUT.is_match(text) {
        let (input, output) = input_output(text);
        vec![Instance { input, output }]
    } else {
        vec![]
    };
    if cut {
        out.pop();
    }
    out
}

/// The examples of a label-first reply (the last dropped when the reply was cut).
pub fn parse_output_first(reply: &str, cut: bool) -> Vec<Instance> {
    let mut out: Vec<Instance> = reply
        .split("Class label:")
        .skip(1)
        .map(|block| {
            let block = block.trim();
            let (label, input) = block.split_once('\n').unwrap_or((block, ""));
            let input = INPUT_START.replace(input.trim(), "").trim().to_string();
            Instance {
                input,
                output: label.trim().to_string(),
            }
        })
        .collect();
    if cut {
        out.pop();
    }
    out
}

/// The published clean-up of a task's examples: drop those whose output is empty, equal to
/// the input, or (either) ends with a colon (cut off); if two share an input but not an
/// output the task is ambiguous and loses them all; duplicates go; at most `max` stay.
pub fn clean_instances(instances: Vec<Instance>, max: usize) -> Vec<Instance> {
    let valid: Vec<Instance> = instances
        .into_iter()
        .filter(|x| {
            !x.output.is_empty()
                && x.input != x.output
                && !x.input.trim_end().ends_with(':')
                && !x.output.trim_end().ends_with(':')
        })
        .collect();
    let ambiguous = valid.iter().enumerate().any(|(i, a)| {
        !a.input.is_empty()
            && valid[..i]
                .iter()
                .any(|b| b.input == a.input && b.output != a.output)
    });
    if ambiguous {
        return vec![];
    }
    let mut out: Vec<Instance> = vec![];
    for x in valid {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out.truncate(max);
    out
}

/// Alpaca style: what the teacher is asked for, with `demos` (instruction, input, output) as
/// the first tasks of the list.
pub fn alpaca(demos: &[(String, String, String)], total: usize) -> String {
    let mut p = format!(
        "You are asked to come up with {total} diverse tasks a company's assistant could be \
         given, each with an instruction, an input and the output a careful assistant would \
         give.\n\n\
         Requirements:\n\
         1. Vary the verbs and the kinds of task: open questions, drafting, classification, \
         extraction, rewriting, reasoning, calculation.\n\
         2. Write the instructions in English, in one or two sentences, some as questions and \
         some as requests.\n\
         3. A language model must be able to do the task: nothing that needs pictures, sound, \
         files or acting in the world.\n\
         4. The input is a realistic, specific example of what the instruction works on, under \
         100 words; when the instruction needs no input, write <noinput>.\n\
         5. The output answers the instruction for that input, correctly and in under 100 words.\n\n\
         List of {total} tasks:\n"
    );
    for (i, (inst, input, output)) in demos.iter().enumerate() {
        let inst = inst.split_whitespace().collect::<Vec<_>>().join(" ");
        let input = if input.trim().is_empty() {
            "<noinput>"
        } else {
            input.as_str()
        };
        p.push_str(&format!(
            "###\n{n}. Instruction: {}\n{n}. Input:\n{input}\n{n}. Output:\n{output}\n",
            inst.trim_end_matches(':'),
            n = i + 1
        ));
    }
    p.push_str(&format!("###\n{}. Instruction:", demos.len() + 1));
    p
}

/// One Alpaca-style task: instruction, input (empty for `<noinput>`), output; `None` where an
/// item lacks a part.
pub type AlpacaItem = Option<(String, String, String)>;

/// The tasks of an Alpaca-style reply, numbered from `first` (the last dropped when cut).
pub fn parse_alpaca(reply: &str, first: usize, cut: bool) -> Vec<AlpacaItem> {
    let text = format!("{first}. Instruction:{reply}");
    let blocks: Vec<&str> = text.split("###").collect();
    let n = blocks.len();
    blocks
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !(cut && *i == n - 1))
        .map(|(i, block)| {
            let idx = first + i;
            let re = Regex::new(&format!(r"{idx}\.\s+(Instruction|Input|Output):")).expect("regex");
            let parts: Vec<&str> = re.split(block).collect();
            if parts.len() != 4 {
                return None;
            }
            let inst = parts[1].split_whitespace().collect::<Vec<_>>().join(" ");
            let input = parts[2].trim();
            let input = if input.eq_ignore_ascii_case("<noinput>") {
                ""
            } else {
                input
            };
            Some((inst, input.to_string(), parts[3].trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numbered_list_continues_and_a_cut_reply_loses_its_last_item() {
        let p = instruction_list(&["Summarise the memo:".into(), "Draft a  reply".into()]);
        assert!(p.ends_with("1. Summarise the memo\n2. Draft a reply\n3."));
        let (items, dropped) = parse_list(
            " classify the ticket by team.\n4. Extract the date\n5) Write a",
            true,
        );
        assert_eq!(items, ["Classify the ticket by team.", "Extract the date"]);
        assert_eq!(dropped.as_deref(), Some("Write a"));
    }

    #[test]
    fn examples_are_read_input_first_and_label_first() {
        let reply = "Input: 3, 1, 2\nOutput: 1, 2, 3\nExample 2\nInput: None\nOutput: nothing to sort\nExample 3\nInput: 5,";
        let x = parse_input_first(reply, true);
        assert_eq!(x.len(), 2);
        assert_eq!(
            x[0],
            Instance {
                input: "3, 1, 2".into(),
                output: "1, 2, 3".into()
            }
        );
        assert_eq!(x[1].input, "", "None is no input");
        let y = parse_output_first(
            "Class label: billing\nInput: I was charged twice.\nClass label: technical\nInput: The app crashes.",
            false,
        );
        assert_eq!(
            y[1],
            Instance {
                input: "The app crashes.".into(),
                output: "technical".into()
            }
        );
    }

    #[test]
    fn instances_are_cleaned_as_published() {
        let i = |a: &str, b: &str| Instance {
            input: a.into(),
            output: b.into(),
        };
        let kept = clean_instances(
            vec![
                i("a", "b"),
                i("a", "b"),
                i("c", ""),
                i("d", "d"),
                i("e:", "f"),
                i("g", "h"),
            ],
            5,
        );
        assert_eq!(kept, vec![i("a", "b"), i("g", "h")]);
        assert!(
            clean_instances(vec![i("a", "b"), i("a", "c")], 5).is_empty(),
            "same input, two outputs"
        );
        assert_eq!(
            clean_instances((0..9).map(|k| i(&k.to_string(), "x")).collect(), 5).len(),
            5
        );
    }

    #[test]
    fn alpaca_blocks_parse_with_noinput() {
        let reply = " Name a colour.\n4. Input:\n<noinput>\n4. Output:\nBlue.\n###\n5. Instruction: Add the numbers.\n5. Input:\n2 and 3\n5. Output:\n5\n###\n6. Instruction: Cut";
        let items = parse_alpaca(reply, 4, true);
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0],
            Some(("Name a colour.".into(), String::new(), "Blue.".into()))
        );
        assert_eq!(items[1].as_ref().unwrap().1, "2 and 3");
        let p = alpaca(&[("Say hi".into(), String::new(), "Hi!".into())], 20);
        assert!(p.contains("###\n1. Instruction: Say hi\n1. Input:\n<noinput>\n1. Output:\nHi!\n###\n2. Instruction:"));
    }
}
