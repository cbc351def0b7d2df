//! A reader for HuJSON ("human JSON"), the policy file format: JSON plus `//` and `/* */`
//! comments and trailing commas in objects and arrays. It reads straight into a
//! [`serde_json::Value`] and, unlike a plain JSON reader, refuses duplicate object keys, so
//! a policy never silently loses one of two `"acls"` sections.

use serde_json::{Map, Value};

/// Why a text is not valid HuJSON; `line` and `column` count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct HujsonError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 256;

/// Parses a HuJSON document into a JSON value.
pub fn parse(text: &str) -> Result<Value, HujsonError> {
    let mut reader = Reader { text: text.as_bytes(), pos: 0 };
    reader.skip_space()?;
    let value = reader.value(0)?;
    reader.skip_space()?;
    if reader.pos < reader.text.len() {
        return Err(reader.error("unexpected text after the end of the document"));
    }
    Ok(value)
}

struct Reader<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn error(&self, message: impl Into<String>) -> HujsonError {
        let before = &self.text[..self.pos.min(self.text.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
        HujsonError { line, column, message: message.into() }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    /// Skips whitespace and comments.
    fn skip_space(&mut self) -> Result<(), HujsonError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(b'/') => match self.text.get(self.pos + 1) {
                    Some(b'/') => {
                        while self.peek().is_some_and(|b| b != b'\n') {
                            self.pos += 1;
                        }
                    }
                    Some(b'*') => {
                        let start = self.pos;
                        self.pos += 2;
                        loop {
                            match self.peek() {
                                None => {
                                    self.pos = start;
                                    return Err(self.error("unterminated /* comment"));
                                }
                                Some(b'*') if self.text.get(self.pos + 1) == Some(&b'/') => {
                                    self.pos += 2;
                                    break;
                                }
                                Some(_) => self.pos += 1,
                            }
                        }
                    }
                    _ => return Err(self.error("unexpected '/'")),
                },
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, HujsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error("too deeply nested"));
        }
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => {
                for (word, value) in [("true", Value::Bool(true)), ("false", Value::Bool(false)), ("null", Value::Null)]
                {
                    if self.text[self.pos..].starts_with(word.as_bytes()) {
                        self.pos += word.len();
                        return Ok(value);
                    }
                }
                Err(self.error("expected a value"))
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, HujsonError> {
        self.pos += 1;
        let mut map = Map::new();
        loop {
            self.skip_space()?;
            match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                Some(b'"') => {}
                _ => return Err(self.error("expected a string key or '}'")),
            }
            let key_pos = self.pos;
            let key = self.string()?;
            self.skip_space()?;
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':' after an object key"));
            }
            self.pos += 1;
            self.skip_space()?;
            let value = self.value(depth + 1)?;
            if map.contains_key(&key) {
                self.pos = key_pos;
                return Err(self.error(format!("duplicate key {key:?}")));
            }
            map.insert(key, value);
            self.skip_space()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.error("expected ',' or '}' in an object")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, HujsonError> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_space()?;
            if self.peek() == Some(b']') {
                self.pos += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value(depth + 1)?);
            self.skip_space()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {}
                _ => return Err(self.error("expected ',' or ']' in an array")),
            }
        }
    }

    fn string(&mut self) -> Result<String, HujsonError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let escape = self.peek().ok_or_else(|| self.error("unterminated string"))?;
                    self.pos += 1;
                    let c = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => {
                            self.pos -= 1;
                            return Err(self.error("invalid escape in a string"));
                        }
                    };
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
                0..=0x1f => {
                    self.pos -= 1;
                    return Err(self.error("control character in a string"));
                }
                _ => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("string is not valid UTF-8"))
    }

    /// Reads the four hex digits after `\u`, and a following low surrogate when needed.
    fn unicode_escape(&mut self) -> Result<char, HujsonError> {
        let first = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if !self.text[self.pos..].starts_with(b"\\u") {
                return Err(self.error("unpaired surrogate in a \\u escape"));
            }
            self.pos += 2;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(self.error("unpaired surrogate in a \\u escape"));
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))
    }

    fn hex4(&mut self) -> Result<u32, HujsonError> {
        let digits = self.text.get(self.pos..self.pos + 4).ok_or_else(|| self.error("short \\u escape"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.error("invalid \\u escape"))?;
        let code = u32::from_str_radix(text, 16).map_err(|_| self.error("invalid \\u escape"))?;
        self.pos += 4;
        Ok(code)
    }

    fn number(&mut self) -> Result<Value, HujsonError> {
        let start = self.pos;
        let digits = |r: &mut Self| {
            let from = r.pos;
            while r.peek().is_some_and(|b| b.is_ascii_digit()) {
                r.pos += 1;
            }
            r.pos > from
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        if self.peek() == Some(b'0') {
            self.pos += 1;
        } else if !digits(self) {
            return Err(self.error("invalid number"));
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !digits(self) {
                return Err(self.error("invalid number"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !digits(self) {
                return Err(self.error("invalid number"));
            }
        }
        let text = std::str::from_utf8(&self.text[start..self.pos]).expect("ASCII digits");
        serde_json::from_str(text).map_err(|_| {
            self.pos = start;
            self.error("number out of range")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_comments_and_trailing_commas() {
        let text = r#"
            // the policy
            {
              "acls": [ /* one rule */ {"action": "accept", "src": ["*"], "dst": ["*:*"],},],
              "hosts": {"a": "100.64.0.1", }, // trailing
            }"#;
        let v = parse(text).unwrap();
        assert_eq!(
            v,
            json!({"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}], "hosts": {"a": "100.64.0.1"}})
        );
    }

    #[test]
    fn comment_markers_inside_strings_are_text() {
        let v = parse(r#"{"url": "https://example.com/a", "x": "/* no */"}"#).unwrap();
        assert_eq!(v["url"], "https://example.com/a");
        assert_eq!(v["x"], "/* no */");
    }

    #[test]
    fn decodes_escapes_and_numbers() {
        let v = parse(r#"["a\"b\\c\n", "\u00e9\ud83d\ude80", -1.5e2, 0, 42, true, false, null]"#).unwrap();
        assert_eq!(v, json!(["a\"b\\c\n", "é🚀", -150.0, 0, 42, true, false, null]));
    }

    #[test]
    fn refuses_duplicate_keys_with_position() {
        let err = parse("{\n  \"acls\": [],\n  \"acls\": []\n}").unwrap_err();
        assert_eq!((err.line, err.column), (3, 3));
        assert!(err.message.contains("duplicate key \"acls\""), "{err}");
    }

    #[test]
    fn refuses_malformed_documents() {
        for bad in
            ["", "{", "[1,,]", "{\"a\" 1}", "{'a': 1}", "[1] 2", "/* open", "[01]", "[1.]", "\"\\x\"", "[tru]", "{,}"]
        {
            assert!(parse(bad).is_err(), "{bad:?} should fail");
        }
        let deep = "[".repeat(MAX_DEPTH + 2);
        assert!(parse(&deep).unwrap_err().message.contains("deeply"));
    }
}
