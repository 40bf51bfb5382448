//! A hand-written o200k pre-tokenizer for printable ASCII text: the same splits as
//! tiktoken's o200k regex, without a regex engine per piece. Text with any other byte
//! (non-ASCII, control characters) goes through bpe-openai's regex instead. Parity
//! with tiktoken is checked on real prompts and on random strings (tests/it/tokens.rs).
//!
//! The pattern, alternatives tried in order at each position:
//!   1. [^\r\n L N]? [Lu]* [Ll]+ contraction?     2. [^\r\n L N]? [Lu]+ [Ll]* contraction?
//!   3. N{1,3}    4. ' '? [^\s L N]+ [\r\n/]*    5. \s* [\r\n]+    6. \s+(?!\S)    7. \s+

/// True when the fast path applies: only printable ASCII, tab, LF and CR.
pub fn is_plain_ascii(text: &[u8]) -> bool {
    text.iter()
        .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t' || b == b'\n' || b == b'\r')
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// `[^\r\n\p{L}\p{N}]`: may prefix a word.
fn is_prefix(b: u8) -> bool {
    !(b.is_ascii_alphanumeric() || b == b'\r' || b == b'\n')
}

/// `[^\s\p{L}\p{N}]`: punctuation and symbols.
fn is_punct(b: u8) -> bool {
    !(b.is_ascii_alphanumeric() || is_space(b))
}

fn run(t: &[u8], mut i: usize, pred: impl Fn(u8) -> bool) -> usize {
    while i < t.len() && pred(t[i]) {
        i += 1;
    }
    i
}

/// Length of an optional contraction (`'s`, `'RE`, ...) at `i`.
fn contraction(t: &[u8], i: usize) -> usize {
    if t.get(i) != Some(&b'\'') {
        return 0;
    }
    let a = t.get(i + 1).map(u8::to_ascii_lowercase);
    let b = t.get(i + 2).map(u8::to_ascii_lowercase);
    match (a, b) {
        (Some(b's' | b't' | b'm' | b'd'), _) => 2,
        (Some(b'r'), Some(b'e')) | (Some(b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => 3,
        _ => 0,
    }
}

/// The end of the piece that starts at `i` (< t.len()).
fn piece_end(t: &[u8], i: usize) -> usize {
    let c = t[i];
    // 1 and 2: words, with an optional prefix character.
    let j = if is_prefix(c) { i + 1 } else { i };
    let upper = run(t, j, |b| b.is_ascii_uppercase());
    let lower = run(t, upper, |b| b.is_ascii_lowercase());
    if lower > upper || upper > j {
        return lower + contraction(t, lower);
    }
    // 3: up to three digits.
    if c.is_ascii_digit() {
        return run(t, i, |b| b.is_ascii_digit()).min(i + 3);
    }
    // 4: punctuation, with an optional leading space and trailing newlines/slashes.
    let j = if c == b' ' { i + 1 } else { i };
    let punct = run(t, j, is_punct);
    if punct > j {
        return run(t, punct, |b| b == b'\r' || b == b'\n' || b == b'/');
    }
    // 5-7: whitespace.
    let ws_end = run(t, i, is_space);
    if let Some(last_newline) = t[i..ws_end].iter().rposition(|&b| b == b'\r' || b == b'\n') {
        return i + last_newline + 1;
    }
    if ws_end == t.len() || ws_end - i == 1 {
        ws_end
    } else {
        ws_end - 1
    }
}

/// Calls `f` with every piece of `text`, which must pass [`is_plain_ascii`].
pub fn for_each_piece<'a>(text: &'a [u8], mut f: impl FnMut(&'a [u8])) {
    let mut i = 0;
    while i < text.len() {
        let end = piece_end(text, i);
        f(&text[i..end]);
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for_each_piece(s.as_bytes(), |p| out.push(std::str::from_utf8(p).unwrap()));
        out
    }

    #[test]
    fn splits_like_o200k() {
        assert_eq!(pieces("Hello world"), ["Hello", " world"]);
        assert_eq!(pieces("don't STOP"), ["don't", " STOP"]);
        assert_eq!(pieces("a  b"), ["a", " ", " b"]);
        assert_eq!(pieces("x 12345"), ["x", " ", "123", "45"]);
        assert_eq!(pieces("end.\n\nNext"), ["end", ".\n\n", "Next"]);
        assert_eq!(pieces("  \n  x"), ["  \n", " ", " x"]);
        assert_eq!(pieces("trailing  "), ["trailing", "  "]);
        assert_eq!(pieces("helloWorld"), ["hello", "World"]);
    }
}
