//! The published filters of generated instructions (Wang et al. 2022, and Stanford Alpaca's
//! variant), each counted by name: too short or too long, words language models cannot act on
//! (images, files, maps…), "Write a program", a first character that is punctuation or not
//! ASCII. The ROUGE-L filter against the pool is [`crate::rouge`]'s.

use serde::{Deserialize, Serialize};

/// Self-instruct's word list.
pub const BLACKLIST: [&str; 13] = [
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
    "draw", "plot", "go to",
];

/// Alpaca adds these.
pub const ALPACA_EXTRA: [&str; 5] = ["video", "audio", "music", "flowchart", "diagram"];

/// Why a candidate instruction was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Removed {
    TooShort,
    TooLong,
    Blacklist,
    WriteAProgram,
    StartsWithPunctuation,
    StartsNonAscii,
    /// Too similar to an instruction already in the pool (ROUGE-L above the threshold).
    Similar,
    /// The reply ended at the length limit and this was its last, cut-off item.
    Truncated,
    /// Alpaca style: the item lacks its instruction, input or output.
    Malformed,
}

impl Removed {
    pub fn as_str(self) -> &'static str {
        match self {
            Removed::TooShort => "too_short",
            Removed::TooLong => "too_long",
            Removed::Blacklist => "blacklist",
            Removed::WriteAProgram => "write_a_program",
            Removed::StartsWithPunctuation => "starts_with_punctuation",
            Removed::StartsNonAscii => "starts_non_ascii",
            Removed::Similar => "similar",
            Removed::Truncated => "truncated",
            Removed::Malformed => "malformed",
        }
    }
}

/// The filters' settings.
#[derive(Debug, Clone)]
pub struct Filters {
    /// Fewest words an instruction may have (the published code drops 3 or fewer).
    pub min_words: usize,
    pub max_words: usize,
    pub blacklist: Vec<String>,
}

impl Filters {
    pub fn self_instruct() -> Filters {
        Filters {
            min_words: 4,
            max_words: 150,
            blacklist: BLACKLIST.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn alpaca() -> Filters {
        let mut f = Filters::self_instruct();
        f.blacklist
            .extend(ALPACA_EXTRA.iter().map(|s| s.to_string()));
        f
    }

    /// The first filter `instruction` fails, if any.
    pub fn check(&self, instruction: &str) -> Option<Removed> {
        let words = instruction.split_whitespace().count();
        if words < self.min_words {
            return Some(Removed::TooShort);
        }
        if words > self.max_words {
            return Some(Removed::TooLong);
        }
        if self.blacklist.iter().any(|w| has_word(instruction, w)) {
            return Some(Removed::Blacklist);
        }
        if instruction.starts_with("Write a program") {
            return Some(Removed::WriteAProgram);
        }
        let first = instruction.chars().next()?;
        if first.is_ascii_punctuation() {
            return Some(Removed::StartsWithPunctuation);
        }
        if !first.is_ascii() {
            return Some(Removed::StartsNonAscii);
        }
        None
    }
}

/// Whether `word` (which may hold spaces) occurs in `text` between word boundaries, ignoring
/// case (as Python's `\b…\b` with `re.IGNORECASE`).
pub fn has_word(text: &str, word: &str) -> bool {
    let (t, w) = (text.to_lowercase(), word.to_lowercase());
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(p) = t[from..].find(&w) {
        let at = from + p;
        let before = t[..at].chars().next_back().is_none_or(|c| !is_word(c));
        let after = t[at + w.len()..].chars().next().is_none_or(|c| !is_word(c));
        if before && after {
            return true;
        }
        from = at + t[at..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_filter_by_example() {
        let f = Filters::self_instruct();
        assert_eq!(f.check("Summarise this."), Some(Removed::TooShort));
        assert_eq!(f.check(&"word ".repeat(151)), Some(Removed::TooLong));
        assert_eq!(
            f.check("Describe the image of the sunset"),
            Some(Removed::Blacklist)
        );
        assert_eq!(
            f.check("Tell me how to go to the station"),
            Some(Removed::Blacklist)
        );
        assert_eq!(
            f.check("Write a program that sorts numbers"),
            Some(Removed::WriteAProgram)
        );
        assert_eq!(
            f.check("\"Quote\" the sentence back to me"),
            Some(Removed::StartsWithPunctuation)
        );
        assert_eq!(
            f.check("Écris une lettre au client"),
            Some(Removed::StartsNonAscii)
        );
        assert_eq!(f.check("Summarise the memo for the sales team"), None);
        // Whole words only: "profile" holds "file", "mapping" holds "map".
        assert_eq!(f.check("Update the customer profile mapping rules"), None);
        assert_eq!(
            Filters::alpaca().check("Compose music for the launch video"),
            Some(Removed::Blacklist)
        );
        assert_eq!(f.check("Compose music for the launch video"), None);
    }
}
