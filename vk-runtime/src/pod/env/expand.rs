//! `$(VAR)` expansion and environment variable name rules, as the kubelet applies them
//! (upstream `third_party/forked/golang/expansion` and `IsEnvVarName`).

/// Expands `$(NAME)` references in `input` with `lookup`. `$$` yields a literal `$`; a reference to an
/// unknown name, an unterminated `$(` and a `$` before anything else stay as written.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            match bytes[cursor + 1] {
                b'$' => {
                    out.push('$');
                    cursor += 1;
                    checkpoint = cursor + 1;
                }
                b'(' => match input[cursor + 2..].find(')') {
                    Some(len) => {
                        let name = &input[cursor + 2..cursor + 2 + len];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        cursor += 2 + len;
                        checkpoint = cursor + 1;
                    }
                    None => {
                        // Unterminated: keep `$(` and go on scanning after it.
                        out.push_str("$(");
                        cursor += 1;
                        checkpoint = cursor + 1;
                    }
                },
                _ => {
                    // A lone operator: keep it; the next character is copied with the following text.
                    out.push('$');
                    checkpoint = cursor + 1;
                    cursor += 1;
                }
            }
        }
        cursor += 1;
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

/// Whether `name` may be an environment variable name (strict kubelet rule for `envFrom` keys:
/// `[-._a-zA-Z][-._a-zA-Z0-9]*`, not `.`, `..` or starting with `..`).
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_'));
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && name != "."
        && !name.starts_with("..")
}
