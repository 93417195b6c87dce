//! The LVM text format (the volume group metadata, as `vgcfgbackup` writes it): sections of
//! `key = value` lines.
//!
//! ```text
//!  file    := item*
//!  item    := name '=' value  |  name '{' item* '}'
//!  value   := number | string | '[' (value (',' value)*)? ','? ']'
//!  name    := [A-Za-z0-9_.+-]+          string := '"' ( [^"\\] | '\' any )* '"'
//!  '#' starts a comment up to the end of the line (outside strings)
//! ```
//!
//! Hostile text is bounded: at most [`MAX_TEXT`] bytes, sections nested at most [`MAX_DEPTH`]
//! deep, arrays nested at most once (LVM writes flat arrays), at most [`MAX_ITEMS`] items and
//! values in all. Anything else is an error naming the line.

use std::fmt;

/// Longest metadata text parsed.
pub const MAX_TEXT: usize = 16 << 20;
/// Deepest section nesting (LVM writes 4: volume group, logical_volumes, volume, segment).
pub const MAX_DEPTH: usize = 8;
/// Most items and array values in one text.
pub const MAX_ITEMS: usize = 1 << 20;

/// A value on the right of `=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A number that is not an integer (kept as written; LVM's volume group metadata has none).
    Number(String),
    /// A string, unescaped.
    Str(String),
    /// A flat list of numbers and strings.
    Array(Vec<Value>),
}

/// One item of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `name = value`.
    Value(Value),
    /// `name { ... }`.
    Section(Section),
}

/// A section: named items in file order (names may repeat; lookups take the first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// The items.
    pub items: Vec<(String, Item)>,
}

impl Section {
    /// The value named `key`.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.items.iter().find_map(|(k, i)| match i {
            Item::Value(v) if k == key => Some(v),
            _ => None,
        })
    }

    /// The sub-section named `key`.
    pub fn section(&self, key: &str) -> Option<&Section> {
        self.items.iter().find_map(|(k, i)| match i {
            Item::Section(s) if k == key => Some(s),
            _ => None,
        })
    }

    /// The sub-sections with their names, in file order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.items.iter().filter_map(|(k, i)| match i {
            Item::Section(s) => Some((k.as_str(), s)),
            Item::Value(_) => None,
        })
    }

    /// The integer `key`.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.value(key) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        }
    }

    /// The string `key`.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.value(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The strings of the array `key` (an absent key is an empty list; non-strings skipped).
    pub fn strings(&self, key: &str) -> Vec<&str> {
        match self.value(key) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| match v {
                    Value::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Why a text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What was wrong.
    pub what: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

/// Parses `text` into its top-level section.
pub fn parse(text: &[u8]) -> Result<Section, ParseError> {
    if text.len() > MAX_TEXT {
        return Err(ParseError {
            line: 1,
            what: format!("metadata of {} bytes is larger than {MAX_TEXT}", text.len()),
        });
    }
    let mut p = Parser {
        text,
        at: 0,
        line: 1,
        items: 0,
    };
    let top = p.items(0)?;
    match p.peek() {
        None => Ok(top),
        Some(_) => p.fail("unexpected '}'"),
    }
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
    line: usize,
    items: usize,
}

impl Parser<'_> {
    fn fail<T>(&self, what: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            what: what.into(),
        })
    }

    /// The next byte that is not blank or in a comment, without taking it.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.text.get(self.at) {
            match b {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' | 0 => {}
                b'#' => {
                    while self.text.get(self.at).is_some_and(|&c| c != b'\n') {
                        self.at += 1;
                    }
                    continue;
                }
                _ => return Some(b),
            }
            self.at += 1;
        }
        None
    }

    fn count(&mut self) -> Result<(), ParseError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return self.fail(format!("more than {MAX_ITEMS} items"));
        }
        Ok(())
    }

    /// Items up to the end of the text (depth 0) or the closing '}' (left unread).
    fn items(&mut self, depth: usize) -> Result<Section, ParseError> {
        let mut section = Section::default();
        loop {
            match self.peek() {
                None | Some(b'}') => return Ok(section),
                Some(_) => {}
            }
            self.count()?;
            let name = self.name()?;
            match self.peek() {
                Some(b'=') => {
                    self.at += 1;
                    let v = self.value(false)?;
                    section.items.push((name, Item::Value(v)));
                }
                Some(b'{') => {
                    self.at += 1;
                    if depth + 1 >= MAX_DEPTH {
                        return self.fail(format!("sections nested more than {MAX_DEPTH} deep"));
                    }
                    let inner = self.items(depth + 1)?;
                    if self.peek() != Some(b'}') {
                        return self.fail(format!("section {name} is not closed"));
                    }
                    self.at += 1;
                    section.items.push((name, Item::Section(inner)));
                }
                _ => return self.fail(format!("expected '=' or '{{' after {name}")),
            }
        }
    }

    fn name(&mut self) -> Result<String, ParseError> {
        let start = self.at;
        while self
            .text
            .get(self.at)
            .is_some_and(|&b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b))
        {
            self.at += 1;
        }
        if start == self.at {
            return self.fail("expected a name");
        }
        Ok(String::from_utf8_lossy(&self.text[start..self.at]).into_owned())
    }

    fn value(&mut self, in_array: bool) -> Result<Value, ParseError> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'[') if !in_array => self.array(),
            Some(b) if b.is_ascii_digit() || b == b'-' || b == b'+' => Ok(self.number()),
            _ => self.fail("expected a value"),
        }
    }

    fn number(&mut self) -> Value {
        let start = self.at;
        while self
            .text
            .get(self.at)
            .is_some_and(|&b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        {
            self.at += 1;
        }
        let s = String::from_utf8_lossy(&self.text[start..self.at]).into_owned();
        match s.parse::<i64>() {
            Ok(n) => Value::Int(n),
            Err(_) => Value::Number(s),
        }
    }

    fn string(&mut self) -> Result<Value, ParseError> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.text.get(self.at) {
                None => return self.fail("string is not closed"),
                Some(b'"') => break,
                Some(b'\\') => {
                    self.at += 1;
                    match self.text.get(self.at) {
                        Some(&c) => out.push(c),
                        None => return self.fail("string is not closed"),
                    }
                }
                Some(&c) => {
                    if c == b'\n' {
                        self.line += 1;
                    }
                    out.push(c);
                }
            }
            self.at += 1;
        }
        self.at += 1;
        Ok(Value::Str(String::from_utf8_lossy(&out).into_owned()))
    }

    fn array(&mut self) -> Result<Value, ParseError> {
        self.at += 1;
        let mut values = Vec::new();
        loop {
            if self.peek() == Some(b']') {
                self.at += 1;
                return Ok(Value::Array(values));
            }
            self.count()?;
            values.push(self.value(true)?);
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {}
                _ => return self.fail("expected ',' or ']' in an array"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"vg0 {
id = "C3a8I1-m4QB-VaGk-vaqk-ifVM-zSCa-5JswhP"
seqno = 3
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 8192	# 4 Megabytes
logical_volumes {
lv.1+x {
segment1 {
stripes = [
"pv0", 0
]
}
}
}
}
# Generated by LVM2 version 2.03.16(2)
contents = "Text Format Volume Group"
description = "Write from \"lvcreate\" -n \\x # not a comment"
ratio = 1.5
"#;

    #[test]
    fn a_volume_group_text_parses_into_sections_values_and_arrays() {
        let top = parse(SAMPLE.as_bytes()).unwrap();
        let vg = top.section("vg0").unwrap();
        assert_eq!(vg.int("seqno"), Some(3));
        assert_eq!(vg.int("extent_size"), Some(8192));
        assert_eq!(vg.strings("status"), vec!["RESIZEABLE", "READ", "WRITE"]);
        assert_eq!(vg.strings("flags"), Vec::<&str>::new());
        let seg = vg
            .section("logical_volumes")
            .and_then(|l| l.section("lv.1+x"))
            .and_then(|l| l.section("segment1"))
            .unwrap();
        assert_eq!(
            seg.value("stripes"),
            Some(&Value::Array(vec![Value::Str("pv0".into()), Value::Int(0)]))
        );
        assert_eq!(
            top.str("description"),
            Some(r#"Write from "lvcreate" -n \x # not a comment"#)
        );
        assert_eq!(top.value("ratio"), Some(&Value::Number("1.5".into())));
        assert_eq!(top.sections().count(), 1);
    }

    #[test]
    fn malformed_or_oversized_text_is_an_error_naming_the_line() {
        let err = |t: &str| parse(t.as_bytes()).unwrap_err();
        assert_eq!(err("a {\nb = 1\n").what, "section a is not closed");
        assert_eq!(err("a = \"x").what, "string is not closed");
        assert_eq!(err("a = [1 2]").what, "expected ',' or ']' in an array");
        assert_eq!(err("a = [[1]]").what, "expected a value");
        assert_eq!(err("}").what, "unexpected '}'");
        assert_eq!(err("a b").line, 1);
        assert_eq!(err("\n\n= 1").line, 3);
        let deep = "a {".repeat(MAX_DEPTH) + &"}".repeat(MAX_DEPTH);
        assert!(err(&deep).what.contains("nested"));
        let many = "a = 1\n".repeat(MAX_ITEMS + 1);
        assert!(err(&many).what.contains("items"));
    }
}
