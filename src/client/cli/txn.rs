//! etcdctl's txn text syntax (`etcdctl txn` reading stdin, non-interactive).
//!
//! ```text
//! mod("key1") > "0"          compares, one per line
//! value("key2") = "v"
//!                            blank line
//! put key1 "overwrote-key1"  success requests, one per line
//! get key2
//!                            blank line
//! put key1 "created-key1"    failure requests, to the end (or a blank line)
//! ```
//!
//! A compare is `TARGET("KEY") OP "VALUE"` (also `TARGET("KEY", "RANGE_END")`), TARGET
//! one of `ver`/`version`, `c`/`create`, `m`/`mod`, `val`/`value`, `lease`, OP one of
//! `=` (`==`), `!=`, `<`, `>`; the value is a quoted string (a number for every target
//! but value; unquoted numbers are accepted too). Request lines are split into words
//! like a shell does (double quotes with backslash escapes, single quotes literal) and
//! parsed as the `put`/`get`/`del` commands are. Missing sections are empty. Lines are
//! trimmed; `\r` is ignored.

use crate::mvcc::{Compare, CompareOp, CompareTarget, RequestOp, TxnRequest};

/// A syntax error, naming the line (1-based) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnSyntaxError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for TxnSyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "txn line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for TxnSyntaxError {}

/// Parses a whole txn text.
pub fn parse_txn(text: &str) -> Result<TxnRequest, TxnSyntaxError> {
    let mut txn = TxnRequest::default();
    // 0 compares, 1 success, 2 failure, 3 done: a blank line ends a section.
    let mut section = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            section = (section + 1).min(3);
            continue;
        }
        let err = |message: String| TxnSyntaxError {
            line: i + 1,
            message,
        };
        match section {
            0 => txn.compare.push(parse_compare(line).map_err(err)?),
            1 => txn.success.push(parse_op_line(line).map_err(err)?),
            2 => txn.failure.push(parse_op_line(line).map_err(err)?),
            _ => return Err(err("text after the failure requests".into())),
        }
    }
    Ok(txn)
}

/// One request line.
pub fn parse_op_line(line: &str) -> Result<RequestOp, String> {
    let words = split_words(line)?;
    super::parse_txn_op_words(&words)
}

/// Splits a line into words: whitespace separates; `"..."` may contain escapes (`\"`,
/// `\\`, `\n`, `\t`, `\r`, `\0`, `\xHH`); `'...'` is literal.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = cur.take() {
                    words.push(w);
                }
            }
            '"' => {
                let w = cur.get_or_insert_with(String::new);
                read_double_quoted(&mut chars, w)?;
            }
            '\'' => {
                let w = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            c => cur.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = cur {
        words.push(w);
    }
    Ok(words)
}

/// Reads the rest of a `"..."` string (the opening quote already consumed) into `out`.
fn read_double_quoted(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    out: &mut String,
) -> Result<(), String> {
    loop {
        match chars.next() {
            Some('"') => return Ok(()),
            Some('\\') => match chars.next() {
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('0') => out.push('\0'),
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).collect();
                    let b = u8::from_str_radix(&hex, 16)
                        .ok()
                        .filter(|_| hex.len() == 2)
                        .ok_or_else(|| format!("bad escape \\x{hex}"))?;
                    if b > 0x7f {
                        return Err(format!(
                            "escape \\x{hex} is not ASCII (keys and values are text here)"
                        ));
                    }
                    out.push(b as char);
                }
                Some(c) => return Err(format!("unknown escape \\{c}")),
                None => return Err("unterminated double quote".into()),
            },
            Some(c) => out.push(c),
            None => return Err("unterminated double quote".into()),
        }
    }
}

/// One compare line: `TARGET("KEY"[, "RANGE_END"]) OP VALUE`.
pub fn parse_compare(line: &str) -> Result<Compare, String> {
    let (target, rest) = line.split_once('(').ok_or_else(|| {
        format!("malformed comparison {line:?}: expected TARGET(\"KEY\") OP VALUE")
    })?;
    let target = target.trim();
    let mut chars = rest.trim_start().chars().peekable();
    let key = quoted(&mut chars, "key")?;
    skip_ws(&mut chars);
    let range_end = if chars.peek() == Some(&',') {
        chars.next();
        skip_ws(&mut chars);
        quoted(&mut chars, "range end")?
    } else {
        String::new()
    };
    skip_ws(&mut chars);
    if chars.next() != Some(')') {
        return Err(format!(
            "malformed comparison {line:?}: expected ')' after the key"
        ));
    }
    skip_ws(&mut chars);
    let mut op = String::new();
    while let Some(&c) = chars.peek() {
        if matches!(c, '=' | '!' | '<' | '>') {
            op.push(c);
            chars.next();
        } else {
            break;
        }
    }
    let op = match op.as_str() {
        "=" | "==" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        "<" => CompareOp::Less,
        ">" => CompareOp::Greater,
        "" => return Err(format!("malformed comparison {line:?}: missing operator")),
        other => return Err(format!("unknown comparison operator {other:?}")),
    };
    skip_ws(&mut chars);
    let value = if chars.peek() == Some(&'"') {
        quoted(&mut chars, "value")?
    } else {
        let v: String = chars.by_ref().take_while(|c| !c.is_whitespace()).collect();
        if v.is_empty() {
            return Err(format!("malformed comparison {line:?}: missing value"));
        }
        v
    };
    skip_ws(&mut chars);
    if let Some(c) = chars.next() {
        return Err(format!(
            "malformed comparison {line:?}: unexpected {c:?} after the value"
        ));
    }
    let num = |what: &str| -> Result<i64, String> {
        value
            .parse::<i64>()
            .map_err(|e| format!("{what} comparison needs a number, got {value:?}: {e}"))
    };
    let target = match target {
        "ver" | "version" => CompareTarget::Version(num("version")?),
        "c" | "create" => CompareTarget::Create(num("create")?),
        "m" | "mod" => CompareTarget::Mod(num("mod")?),
        "val" | "value" => CompareTarget::Value(value.clone().into_bytes()),
        "lease" => CompareTarget::Lease(num("lease")?),
        other => {
            return Err(format!(
            "unknown comparison target {other:?} (expected version, create, mod, value or lease)"
        ))
        }
    };
    Ok(Compare {
        op,
        target,
        key: key.into_bytes(),
        range_end: range_end.into_bytes(),
    })
}

fn skip_ws(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
}

fn quoted(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    what: &str,
) -> Result<String, String> {
    if chars.next() != Some('"') {
        return Err(format!("expected a double-quoted {what}"));
    }
    let mut s = String::new();
    read_double_quoted(chars, &mut s)?;
    Ok(s)
}
