//! The vocabulary every stage shares: a parsed job record ([`Job`]), the task,
//! complexity and tier words, where a record came from ([`Position`]), and the text
//! cuts the classifier and the LLM question make. Parsing lives in `input/`;
//! decisions in `classify`/`route`.

use std::fmt;

use crate::money::Usd;

/// An enum of words from a fixed vocabulary (task, tier, status…): each variant's
/// text is how it is written everywhere — JSON, Parquet, the journal, flags, messages.
macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} '{}' (expected one of: {})",
                        stringify!($name).to_lowercase(),
                        other,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use word_enum;

word_enum!(
    /// What a record asks for; decides the route.
    Task {
        Chat = "chat",
        Code = "code",
        Summarization = "summarization",
        Translation = "translation",
        Classification = "classification",
        Extraction = "extraction",
        Creative = "creative",
        Reasoning = "reasoning",
        Vision = "vision",
        Agent = "agent",
        Rag = "rag",
    }
);

word_enum!(
    /// How hard a record is; `complex` may move it up a tier.
    Complexity {
        Simple = "simple",
        Moderate = "moderate",
        Complex = "complex",
    }
);

word_enum!(
    /// The price/quality tier whose route list is used.
    Tier {
        Budget = "budget",
        Balanced = "balanced",
        Quality = "quality",
    }
);

impl Complexity {
    pub fn raised(self) -> Complexity {
        match self {
            Complexity::Simple => Complexity::Moderate,
            _ => Complexity::Complex,
        }
    }
}

impl Tier {
    pub fn next_up(self) -> Tier {
        match self {
            Tier::Budget => Tier::Balanced,
            _ => Tier::Quality,
        }
    }
}

/// The first `n` bytes of `s`, cut back to a char boundary.
pub fn head(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The last `n` bytes of `s`, cut forward to a char boundary.
pub fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// One chat message. `content` keeps text parts and images apart so that tokens and
/// the `vision` task can be derived without re-parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: String,
    pub text: String,
    /// Image parts: URL (or data URL) and `detail`.
    pub images: Vec<Image>,
    /// Optional `name` field (costs a token in OpenAI's chat format).
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub url: String,
    pub detail: ImageDetail,
}

/// OpenAI's `detail`: `low` is priced flat; `high`/`auto` by size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageDetail {
    Low,
    High,
}

/// A validated job record, ready for classification and routing.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub messages: Vec<Message>,
    pub task: Option<Task>,
    pub tier: Option<Tier>,
    pub model: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub response_format: Option<serde_json::Value>,
    pub labels: Option<Vec<String>>,
    pub tags: Vec<String>,
    pub max_cost: Option<Usd>,
    pub metadata: Option<serde_json::Value>,
}

impl Job {
    /// A record with one user message and nothing else set (as `{"prompt": text}`).
    pub fn from_prompt(id: &str, text: &str) -> Job {
        Job {
            id: id.into(),
            messages: vec![Message {
                role: "user".into(),
                text: text.into(),
                images: vec![],
                name: None,
            }],
            task: None,
            tier: None,
            model: None,
            max_tokens: None,
            temperature: None,
            response_format: None,
            labels: None,
            tags: vec![],
            max_cost: None,
            metadata: None,
        }
    }

    /// The last user message's text, which the classifier reads first.
    pub fn last_user_text(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.text.as_str())
            .unwrap_or("")
    }

    /// The system prompt(s), joined by the classifier as a weaker signal.
    pub fn system_text(&self) -> impl Iterator<Item = &str> {
        self.messages
            .iter()
            .filter(|m| m.role == "system" || m.role == "developer")
            .map(|m| m.text.as_str())
    }

    /// User + assistant messages: a conversation's length in turns.
    pub fn turns(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.role == "user" || m.role == "assistant")
            .count()
    }

    pub fn has_images(&self) -> bool {
        self.messages.iter().any(|m| !m.images.is_empty())
    }
}

/// Where a record came from, for error messages: `jobs/x.jsonl:17` or `x.parquet row 17`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Line(u64),
    Row(u64),
}

impl Position {
    pub fn number(self) -> u64 {
        match self {
            Position::Line(n) | Position::Row(n) => n,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Row(n) => write!(f, "row {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for t in Task::ALL {
            assert_eq!(t.as_str().parse::<Task>().unwrap(), *t);
        }
        assert_eq!(" Quality ".parse::<Tier>().unwrap(), Tier::Quality);
        let err = "fast".parse::<Tier>().unwrap_err();
        assert_eq!(
            err,
            "unknown tier 'fast' (expected one of: budget, balanced, quality)"
        );
        // Serde writes each word as its text.
        assert_eq!(
            serde_json::to_string(&Task::Summarization).unwrap(),
            "\"summarization\""
        );
        let t: Tier = serde_json::from_str("\"budget\"").unwrap();
        assert_eq!(t, Tier::Budget);
    }
}
