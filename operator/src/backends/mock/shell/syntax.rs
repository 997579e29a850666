//! The syntax of the mock's shell: splitting a body into commands and a command into words, and
//! `sleep` durations.

use std::time::Duration;

/// How long `sleep` sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SleepFor {
    Duration(Duration),
    Forever,
}

/// `sleep` durations: seconds with an optional `s`, `m`, `h` or `d` suffix, or `infinity`; `None` when
/// invalid.
pub fn parse_sleep(arg: &str) -> Option<SleepFor> {
    if arg == "infinity" || arg == "inf" {
        return Some(SleepFor::Forever);
    }
    let (num, unit) = match arg.char_indices().last() {
        Some((i, 's')) => (&arg[..i], 1.0),
        Some((i, 'm')) => (&arg[..i], 60.0),
        Some((i, 'h')) => (&arg[..i], 3600.0),
        Some((i, 'd')) => (&arg[..i], 86400.0),
        _ => (arg, 1.0),
    };
    let secs: f64 = num
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)?;
    Duration::try_from_secs_f64(secs * unit)
        .ok()
        .map(SleepFor::Duration)
}

/// How a command is joined to the previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Join {
    Always,
    And,
    Or,
}

/// The characters of `s`, each with whether it is shell syntax: outside quotes and not escaped. Quote
/// characters and backslashes are kept (not syntax), so [`split_words`] still sees the quoting.
fn scan(s: &str) -> impl Iterator<Item = (char, bool)> + '_ {
    let (mut quote, mut escaped) = (None, false);
    s.chars().map(move |c| {
        if escaped {
            escaped = false;
            return (c, false);
        }
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if q == c => quote = None,
            (q, '\\') if q != Some('\'') => escaped = true,
            (None, _) => return (c, true),
            _ => {}
        }
        (c, false)
    })
}

/// Split a shell body into commands at `;`, newlines, `&&` and `||` outside quotes.
pub fn split_commands(body: &str) -> Vec<(Join, String)> {
    let mut out = Vec::new();
    let (mut cur, mut join) = (String::new(), Join::Always);
    let mut chars = scan(body).peekable();
    while let Some((c, syntax)) = chars.next() {
        let next = match c {
            ';' | '\n' if syntax => Join::Always,
            '&' | '|' if syntax && chars.peek() == Some(&(c, true)) => {
                chars.next();
                if c == '&' { Join::And } else { Join::Or }
            }
            _ => {
                cur.push(c);
                continue;
            }
        };
        out.push((join, std::mem::take(&mut cur)));
        join = next;
    }
    out.push((join, cur));
    out.retain(|(_, c)| !c.trim().is_empty());
    out
}

/// Split one command (from [`split_commands`]: no `||` left) into pipeline stages at `|` outside
/// quotes; the stages keep their quoting for [`split_words`].
pub fn split_pipeline(cmd: &str) -> Vec<String> {
    let (mut out, mut cur) = (Vec::new(), String::new());
    for (c, syntax) in scan(cmd) {
        if syntax && c == '|' {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Split one command into words: quotes, backslash escapes and `$NAME`/`${NAME}`/`$?` expansion
/// (unknown names expand to nothing; an unquoted word that expands to nothing is dropped).
pub fn split_words(cmd: &str, env: &[(String, String)], last: i32) -> Vec<String> {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut words = Vec::new();
    let (mut cur, mut in_word, mut quoted, mut quote) = (String::new(), false, false, None::<char>);
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word && (quoted || !cur.is_empty()) {
                    words.push(std::mem::take(&mut cur));
                }
                cur.clear();
                (in_word, quoted) = (false, false);
            }
            (None, '\'' | '"') => (quote, in_word, quoted) = (Some(c), true, true),
            (Some(q), c) if q == c => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (_, '$') => {
                in_word = true;
                match chars.peek().copied() {
                    Some('?') => {
                        chars.next();
                        cur.push_str(&last.to_string());
                    }
                    Some('{') => {
                        chars.next();
                        let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                        cur.push_str(&lookup(&name));
                    }
                    Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                        let mut name = String::new();
                        while let Some(&c) = chars
                            .peek()
                            .filter(|c| c.is_ascii_alphanumeric() || **c == '_')
                        {
                            name.push(c);
                            chars.next();
                        }
                        cur.push_str(&lookup(&name));
                    }
                    _ => cur.push('$'),
                }
            }
            (_, c) => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word && (quoted || !cur.is_empty()) {
        words.push(cur);
    }
    words
}
