//! A reply's text as it is sampled: what may be sent now, where a stop string ends it (even
//! one split across tokens: the text that could begin one is held back until it is clear),
//! and Hermes-style tool calls (`<tool_call>{"name": …, "arguments": {…}}</tool_call>`), held
//! back from the content and parsed into `tool_calls` when the reply ends.

use serde_json::Value;

const TOOL_OPEN: &str = "<tool_call>";
const TOOL_CLOSE: &str = "</tool_call>";

pub struct Reply {
    stops: Vec<String>,
    /// Watch for tool calls.
    tools: bool,
    /// The reply so far (cut at a stop string once one matched).
    text: String,
    /// Bytes of `text` already sent as content.
    sent: usize,
    /// Where the first tool call starts, once seen.
    tool_start: Option<usize>,
    stopped: bool,
}

/// A tool call parsed from the reply: the function's name and its arguments as a JSON string.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: String,
}

/// How a reply ends: the rest of its content and its tool calls (if they all parsed).
#[derive(Debug, Default, PartialEq)]
pub struct Ending {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

impl Reply {
    pub fn new(stops: Vec<String>, tools: bool) -> Reply {
        Reply {
            stops,
            tools,
            text: String::new(),
            sent: 0,
            tool_start: None,
            stopped: false,
        }
    }

    /// Whether a stop string has matched (the reply is over).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Adds newly decoded text; returns the content that can be sent now.
    pub fn push(&mut self, piece: &str) -> String {
        if self.stopped || piece.is_empty() {
            return String::new();
        }
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        // A match must end in the new piece: start looking where it could begin.
        let from = self
            .text
            .floor_char_boundary(self.text.len().saturating_sub(longest.saturating_sub(1)));
        self.text.push_str(piece);
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|p| from + p))
            .min();
        if let Some(at) = hit {
            self.text.truncate(at);
            self.stopped = true;
        }
        if self.tools && self.tool_start.is_none() {
            let from = self
                .text
                .floor_char_boundary(self.sent.saturating_sub(TOOL_OPEN.len()));
            self.tool_start = self.text[from..].find(TOOL_OPEN).map(|p| from + p);
        }
        let mut until = if self.stopped {
            self.text.len()
        } else {
            self.text.len() - self.held()
        };
        if let Some(t) = self.tool_start {
            until = until.min(t);
        }
        let out = self.text[self.sent.min(until)..until].to_string();
        self.sent = self.sent.max(until);
        out
    }

    /// Bytes at the end of the text that could begin a stop string or a tool call.
    fn held(&self) -> usize {
        let mut marks: Vec<&str> = self.stops.iter().map(String::as_str).collect();
        if self.tools {
            marks.push(TOOL_OPEN);
        }
        let t = &self.text;
        marks
            .iter()
            .filter_map(|m| {
                (1..m.len().min(t.len() + 1))
                    .rev()
                    .find(|&k| t.is_char_boundary(t.len() - k) && m.starts_with(&t[t.len() - k..]))
            })
            .max()
            .unwrap_or(0)
    }

    /// The reply has ended: what is left to send, and its tool calls when they parse (else
    /// the held text is content after all).
    pub fn finish(&mut self) -> Ending {
        let rest = self.text[self.sent..].to_string();
        self.sent = self.text.len();
        match self.tool_start.map(|t| parse_tool_calls(&self.text[t..])) {
            Some(Some(calls)) => Ending {
                content: String::new(),
                tool_calls: calls,
            },
            _ => Ending {
                content: rest,
                tool_calls: vec![],
            },
        }
    }
}

/// `<tool_call>{…}</tool_call>` blocks (the last may lack its end: the reply stopped there),
/// each a JSON object with a string `name` and object `arguments`; `None` when any is not.
pub fn parse_tool_calls(text: &str) -> Option<Vec<ToolCall>> {
    let mut calls = vec![];
    let mut rest = text.trim_start();
    while let Some(body) = rest.strip_prefix(TOOL_OPEN) {
        let (json, after) = match body.find(TOOL_CLOSE) {
            Some(end) => (&body[..end], &body[end + TOOL_CLOSE.len()..]),
            None => (body, ""),
        };
        let v: Value = serde_json::from_str(json.trim()).ok()?;
        let name = v.get("name")?.as_str()?.to_string();
        let arguments = match v.get("arguments").or_else(|| v.get("parameters")) {
            Some(a @ Value::Object(_)) => a.to_string(),
            Some(Value::String(s)) if serde_json::from_str::<Value>(s).is_ok() => s.clone(),
            None => "{}".to_string(),
            _ => return None,
        };
        calls.push(ToolCall { name, arguments });
        rest = after.trim_start();
    }
    (!calls.is_empty() && rest.is_empty()).then_some(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], tools: bool, pieces: &[&str]) -> (Vec<String>, Ending, bool) {
        let mut r = Reply::new(stops.iter().map(|s| s.to_string()).collect(), tools);
        let mut sent = vec![];
        for p in pieces {
            sent.push(r.push(p));
            if r.stopped() {
                break;
            }
        }
        let stopped = r.stopped();
        (sent, r.finish(), stopped)
    }

    #[test]
    fn a_stop_string_split_across_pieces_stops_and_is_not_sent() {
        let (sent, end, stopped) = run(&["\nUser:"], false, &["Hello", " there\n", "Us", "er: hi"]);
        assert!(stopped);
        assert_eq!(sent.concat() + &end.content, "Hello there");
        // "\n" could begin the stop string: it was held until "Us" + "er:" decided it.
        assert_eq!(sent[1], " there");
    }

    #[test]
    fn held_text_that_turns_out_not_to_stop_is_sent() {
        let (sent, end, stopped) = run(&["STOP"], false, &["a ST", "ORM", " b"]);
        assert!(!stopped);
        assert_eq!(sent, ["a ", "STORM", " b"]);
        assert_eq!(end.content, "");
    }

    #[test]
    fn the_earliest_stop_string_wins() {
        let (sent, end, _) = run(&["cd", "bc"], false, &["ab", "cde"]);
        assert_eq!(sent.concat() + &end.content, "a");
    }

    #[test]
    fn multibyte_text_is_never_split() {
        let (sent, end, stopped) = run(&["éé!"], false, &["café", "é", "s"]);
        assert!(!stopped);
        assert_eq!(sent.concat() + &end.content, "caféés");
    }

    #[test]
    fn tool_calls_are_held_back_and_parsed() {
        let (sent, end, _) = run(
            &[],
            true,
            &[
                "Let me check.",
                "\n<tool",
                "_call>\n{\"name\": \"lookup_order\", ",
                "\"arguments\": {\"order\": \"A-17\"}}\n</tool_call>",
            ],
        );
        assert_eq!(sent.concat(), "Let me check.\n");
        assert_eq!(
            end.tool_calls,
            [ToolCall {
                name: "lookup_order".into(),
                arguments: r#"{"order":"A-17"}"#.into()
            }]
        );
        assert_eq!(end.content, "");
    }

    #[test]
    fn malformed_tool_calls_fall_back_to_content() {
        let (sent, end, _) = run(&[], true, &["<tool_call>{\"name\": oops}</tool_call>"]);
        assert_eq!(sent.concat(), "");
        assert_eq!(end.content, "<tool_call>{\"name\": oops}</tool_call>");
        assert!(end.tool_calls.is_empty());
    }

    #[test]
    fn several_calls_and_a_missing_end_tag() {
        let calls = parse_tool_calls(
            "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>{\"name\": \"b\", \"arguments\": \"{\\\"x\\\": 1}\"}",
        )
        .unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].arguments, r#"{"x": 1}"#);
        assert!(parse_tool_calls("<tool_call>{\"name\": \"a\"}</tool_call> trailing").is_none());
        assert!(parse_tool_calls("no calls").is_none());
    }
}
