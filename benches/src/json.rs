//! A small JSON reader, enough to read fio's `--output-format=json` without a dependency.
//! Malformed input gives an error; nesting is bounded so hostile input cannot overflow the
//! stack.

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// Deepest nesting accepted; fio's output nests about five levels.
const MAX_DEPTH: usize = 64;

impl Json {
    /// Parses the first JSON value in `text`, skipping anything before its first `{`
    /// (fio prints notes ahead of the JSON).
    pub fn parse(text: &str) -> Result<Json, String> {
        let start = text.find('{').ok_or("no JSON object in input")?;
        let mut p = Parser {
            s: &text.as_bytes()[start..],
            i: 0,
        };
        p.value(0)
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Element `i` of an array.
    pub fn at(&self, i: usize) -> Option<&Json> {
        match self {
            Json::Arr(items) => items.get(i),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&mut self) -> Option<u8> {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", c as char, self.i))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_DEPTH {
            return Err("JSON nested too deeply".into());
        }
        match self.peek().ok_or("unexpected end of JSON")? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(Json::Str),
            b't' => self.word("true", Json::Bool(true)),
            b'f' => self.word("false", Json::Bool(false)),
            b'n' => self.word("null", Json::Null),
            _ => self.number(),
        }
    }

    fn word(&mut self, w: &str, v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            Ok(v)
        } else {
            Err(format!("bad literal at byte {}", self.i))
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_ascii_digit() || b"+-.eE".contains(c))
        {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
        text.parse()
            .map(Json::Num)
            .map_err(|_| format!("bad number {text:?} at byte {start}"))
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => self.escape(&mut out)?,
                _ => out.push(c),
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let c = *self.s.get(self.i).ok_or("unterminated escape")?;
        self.i += 1;
        let simple = match c {
            b'"' | b'\\' | b'/' => c,
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let hex = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
                let code =
                    u32::from_str_radix(std::str::from_utf8(hex).map_err(|e| e.to_string())?, 16);
                self.i += 4;
                // Surrogate pairs are not joined: fio never emits them; they become U+FFFD.
                let ch = code.ok().and_then(char::from_u32).unwrap_or('\u{FFFD}');
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                return Ok(());
            }
            _ => return Err(format!("bad escape at byte {}", self.i)),
        };
        out.push(simple);
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Result<Json, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Json::Arr(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                _ => return Err(format!("expected , or ] at byte {}", self.i)),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, String> {
        self.expect(b'{')?;
        let mut members = Vec::new();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Json::Obj(members));
        }
        loop {
            self.peek();
            let key = self.string()?;
            self.expect(b':')?;
            members.push((key, self.value(depth + 1)?));
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Json::Obj(members));
                }
                _ => return Err(format!("expected , or }} at byte {}", self.i)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Json;

    #[test]
    fn reads_fio_shape() {
        let text = "note: x\n{\"jobs\" : [ { \"write\" : { \"bw_bytes\" : 123456, \"iops\" : 1.5e3, \"s\": \"a\\\"b\\u0041\" } } ], \"t\": [true, false, null, -1]}";
        let v = Json::parse(text).expect("parse");
        let w = v
            .get("jobs")
            .and_then(|j| j.at(0))
            .and_then(|j| j.get("write"))
            .expect("path");
        assert_eq!(w.get("bw_bytes").and_then(Json::as_f64), Some(123456.0));
        assert_eq!(w.get("iops").and_then(Json::as_f64), Some(1500.0));
        assert_eq!(w.get("s"), Some(&Json::Str("a\"bA".into())));
    }

    #[test]
    fn malformed_is_an_error() {
        for bad in [
            "{",
            "{\"a\":}",
            "{\"a\" 1}",
            "{\"a\":[1,}",
            "{\"a\":\"\\u12\"}",
            &"[".repeat(1000),
        ] {
            assert!(Json::parse(&format!("{{\"x\":{bad}")).is_err(), "{bad}");
        }
    }
}
