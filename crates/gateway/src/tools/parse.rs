//! Reading tool calls out of a model's text as it streams: text before a call is content, a
//! call becomes its name (as soon as it is known) and its arguments text (piece by piece), and
//! none of the markup leaks into content. Non-streamed answers run the same parser over the
//! whole text, so both ways give the same calls.
//!
//! The parser is lenient where a model that chose freely (`tool_choice: auto`) may be: keys in
//! either order, whitespace around markers, a missing closing tag at the end. What cannot be
//! read as a call to a defined tool stays content, verbatim.

use serde_json::Value;

use super::syntax::ToolSyntax;

/// What the parser read from a piece of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Content(String),
    /// A call starts: its index in the answer and the function's name.
    Call {
        index: usize,
        name: String,
    },
    /// More of call `index`'s arguments text.
    Arguments {
        index: usize,
        text: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Text that may hold the start of the calls.
    Text,
    /// Mistral: after `[TOOL_CALLS]`, the list's `[`.
    ListOpen,
    /// Llama 3: the answer's start, where calls must begin.
    Start,
    /// Inside a call's object, before its name is read.
    Head,
    /// Inside a call's arguments value.
    Arguments,
    /// After the arguments value: the call's closing `}`.
    CloseObject,
    /// After a call: its closing marker, a separator, or the end of the list.
    AfterCall,
    /// After a separator: the next call's object.
    NextCall,
    /// Everything else is content (an answer that is not, or no longer, calls).
    Plain,
}

/// One choice's parser. (Public for the fuzzer; the chat handler is its user.)
#[derive(Debug)]
pub struct CallParser {
    syntax: ToolSyntax,
    /// The functions a call may name.
    names: Vec<String>,
    state: State,
    /// Text not consumed yet.
    buf: String,
    /// Markup consumed for a call not yet recognised (an opening tag, a separator): given
    /// back as content if no call follows.
    raw: String,
    /// Trailing whitespace of the content so far, held back: it is dropped when calls follow.
    pending_ws: String,
    calls: usize,
    scanner: JsonScanner,
}

impl CallParser {
    /// A parser for `syntax` whose calls may name `names`.
    pub fn new(syntax: ToolSyntax, names: Vec<String>) -> Self {
        let state = match syntax {
            ToolSyntax::Llama3Json => State::Start,
            ToolSyntax::Hermes | ToolSyntax::Mistral => State::Text,
        };
        Self {
            syntax,
            names,
            state,
            buf: String::new(),
            raw: String::new(),
            pending_ws: String::new(),
            calls: 0,
            scanner: JsonScanner::default(),
        }
    }

    /// How many calls have started.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Reads `text`; returns what can be told so far.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        self.run(false, &mut out);
        out
    }

    /// The answer is complete: whatever is left is told.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        self.run(true, &mut out);
        if !self.raw.is_empty() || !self.buf.is_empty() {
            self.give_up(&mut out);
        }
        if self.calls == 0 && !self.pending_ws.is_empty() {
            out.push(Piece::Content(std::mem::take(&mut self.pending_ws)));
        }
        out
    }

    fn content(&mut self, text: String, out: &mut Vec<Piece>) {
        if text.is_empty() {
            return;
        }
        let trimmed = text.trim_end();
        if trimmed.is_empty() {
            self.pending_ws.push_str(&text);
            return;
        }
        let mut piece = std::mem::take(&mut self.pending_ws);
        piece.push_str(trimmed);
        self.pending_ws = text[trimmed.len()..].to_string();
        match out.last_mut() {
            Some(Piece::Content(last)) => last.push_str(&piece),
            _ => out.push(Piece::Content(piece)),
        }
    }

    /// Consumes `n` bytes of the buffer as content.
    fn take_content(&mut self, n: usize, out: &mut Vec<Piece>) {
        let text: String = self.buf.drain(..n).collect();
        self.content(text, out);
    }

    /// Consumes `n` bytes of the buffer as markup: kept aside until a call takes it, or given
    /// back as content if none does.
    fn take_markup(&mut self, n: usize) {
        let text: String = self.buf.drain(..n).collect();
        self.raw.push_str(&text);
    }

    /// Consumes the buffer's leading whitespace as markup.
    fn skip_ws(&mut self) {
        let n = self.buf.len() - self.buf.trim_start().len();
        self.take_markup(n);
    }

    /// The markup kept aside belonged to a call.
    fn commit_markup(&mut self) {
        self.raw.clear();
    }

    /// The opening marker of calls for text states.
    fn opener(&self) -> &'static str {
        match self.syntax {
            ToolSyntax::Hermes => "<tool_call>",
            ToolSyntax::Mistral => "[TOOL_CALLS]",
            ToolSyntax::Llama3Json => "<|python_tag|>",
        }
    }

    /// What looked like a call is not one: the markup kept aside and everything after it are
    /// content, as the model wrote them.
    fn give_up(&mut self, out: &mut Vec<Piece>) {
        self.state = State::Plain;
        let mut text = std::mem::take(&mut self.raw);
        text.push_str(&std::mem::take(&mut self.buf));
        self.content(text, out);
    }

    fn run(&mut self, at_end: bool, out: &mut Vec<Piece>) {
        loop {
            let before = (self.state, self.buf.len());
            match self.state {
                State::Plain => {
                    let n = self.buf.len();
                    self.take_content(n, out);
                }
                State::Text => self.text(at_end, out),
                State::ListOpen => self.list_open(at_end, out),
                State::Start => self.start(at_end, out),
                State::Head => self.head(at_end, out),
                State::Arguments => self.arguments(out),
                State::CloseObject => self.close_object(at_end, out),
                State::AfterCall => self.after_call(at_end, out),
                State::NextCall => self.next_call(at_end, out),
            }
            if (self.state, self.buf.len()) == before {
                return;
            }
        }
    }

    fn text(&mut self, at_end: bool, out: &mut Vec<Piece>) {
        let opener = self.opener();
        if let Some(i) = self.buf.find(opener) {
            self.take_content(i, out);
            self.take_markup(opener.len());
            self.state = if self.syntax == ToolSyntax::Mistral {
                State::ListOpen
            } else {
                State::Head
            };
            return;
        }
        // Keep back a tail that may be the start of the marker.
        let keep = if at_end {
            0
        } else {
            (1..opener.len().min(self.buf.len() + 1))
                .rev()
                .find(|&k| {
                    self.buf.is_char_boundary(self.buf.len() - k)
                        && opener.starts_with(&self.buf[self.buf.len() - k..])
                })
                .unwrap_or(0)
        };
        let n = self.buf.len() - keep;
        self.take_content(n, out);
    }

    /// Mistral: the list's `[` after `[TOOL_CALLS]`.
    fn list_open(&mut self, at_end: bool, out: &mut Vec<Piece>) {
        self.skip_ws();
        if self.buf.starts_with('[') {
            self.take_markup(1);
            self.state = State::Head;
        } else if !self.buf.is_empty() || at_end {
            self.give_up(out);
        }
    }

    fn start(&mut self, at_end: bool, out: &mut Vec<Piece>) {
        let rest = self.buf.trim_start();
        if rest.is_empty() {
            return;
        }
        let tag = self.opener();
        if rest.starts_with(tag) {
            self.skip_ws();
            self.take_markup(tag.len());
            return;
        }
        if tag.starts_with(rest) && !at_end {
            return;
        }
        if rest.starts_with('{') {
            self.skip_ws();
            self.state = State::Head;
        } else {
            // Not calls: the answer is text, `<|python_tag|>` included if it came first.
            self.give_up(out);
        }
    }

    fn head(&mut self, at_end: bool, out: &mut Vec<Piece>) {
        match read_head(&self.buf) {
            Head::Incomplete if !at_end => {}
            Head::Found { name, consumed } if self.names.contains(&name) => {
                self.buf.drain(..consumed);
                self.commit_markup();
                out.push(Piece::Call {
                    index: self.calls,
                    name,
                });
                self.calls += 1;
                self.scanner = JsonScanner::default();
                self.state = State::Arguments;
            }
            // Another key order: the whole object, once complete.
            Head::Other => match read_object(&self.buf) {
                Some((name, arguments, consumed)) if self.names.contains(&name) => {
                    self.buf.drain(..consumed);
                    self.commit_markup();
                    let index = self.calls;
                    self.calls += 1;
                    out.push(Piece::Call { index, name });
                    out.push(Piece::Arguments {
                        index,
                        text: arguments,
                    });
                    self.state = State::AfterCall;
                }
                None if !at_end && !object_complete(&self.buf) => {}
                _ => self.give_up(out),
            },
            _ => self.give_up(out),
        }
    }

    fn arguments(&mut self, out: &mut Vec<Piece>) {
        let (n, done) = self.scanner.feed(&self.buf);
        if n > 0 {
            let text: String = self.buf.drain(..n).collect();
            out.push(Piece::Arguments {
                index: self.calls - 1,
                text,
            });
        }
        if done {
            self.state = State::CloseObject;
        }
    }

    /// The call object's `}` (markup of the call, so never given back).
    fn close_object(&mut self, at_end: bool, out: &mut Vec<Piece>) {
        let rest = self.buf.trim_start();
        if rest.starts_with('}') {
            let n = self.buf.len() - rest.len() + 1;
            self.buf.drain(..n);
            self.state = State::AfterCall;
        } else if rest.starts_with(',') {
            // More keys after the arguments (Mistral's templates show calls with an `id`):
            // skipped up to the object's end.
            match object_end(rest) {
                Some(end) => {
                    let n = self.buf.len() - rest.len() + end;
                    self.buf.drain(..n);
                    self.state = State::AfterCall;
                }
                None if at_end => self.buf.clear(),
                None => {}
            }
        } else if !rest.is_empty() || at_end {
            self.give_up(out);
        }
    }

    fn after_call(&mut self, at_end: bool, out: &mut Vec<Piece>) {
        let rest = self.buf.trim_start();
        let ws = self.buf.len() - rest.len();
        let (separator, close) = match self.syntax {
            ToolSyntax::Hermes => {
                let close = "</tool_call>";
                if rest.starts_with(close) {
                    // The closing tag ends the call: no markup is pending.
                    self.buf.drain(..ws + close.len());
                    self.state = State::Text;
                } else if rest.is_empty() || (close.starts_with(rest) && !at_end) {
                    if at_end {
                        self.buf.clear();
                    }
                } else {
                    // No closing tag: what follows is text again.
                    self.state = State::Text;
                }
                return;
            }
            ToolSyntax::Llama3Json => (';', None),
            ToolSyntax::Mistral => (',', Some(']')),
        };
        if rest.starts_with(separator) {
            self.take_markup(ws + 1);
            self.state = State::NextCall;
        } else if close.is_some_and(|c| rest.starts_with(c)) {
            self.buf.drain(..ws + 1);
            self.state = State::Text;
        } else if rest.is_empty() {
            if at_end {
                self.buf.clear();
            }
        } else {
            self.give_up(out);
        }
    }

    fn next_call(&mut self, at_end: bool, out: &mut Vec<Piece>) {
        let rest = self.buf.trim_start();
        if rest.starts_with('{') {
            self.skip_ws();
            self.state = State::Head;
        } else if !rest.is_empty() || at_end {
            self.give_up(out);
        }
    }
}

/// What the start of a call's object says.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// `{"name": "…", "arguments": ` up to the arguments object's `{` (not consumed).
    Found { name: String, consumed: usize },
    /// Too little text to tell.
    Incomplete,
    /// An object, but not in that order.
    Other,
    /// Not an object.
    Invalid,
}

/// Reads `{ "name" : "<name>" , "arguments"|"parameters" : ` and checks an object follows.
fn read_head(text: &str) -> Head {
    let mut r = Reader { text, at: 0 };
    if !r.eat('{') {
        return if r.at_end() {
            Head::Incomplete
        } else {
            Head::Invalid
        };
    }
    match r.key("name") {
        Step::Ok => {}
        Step::More => return Head::Incomplete,
        Step::No => return Head::Other,
    }
    let name = match r.string() {
        Text::Ok(name) => name,
        Text::More => return Head::Incomplete,
        Text::No => return Head::Other,
    };
    if !r.eat(',') {
        return if r.at_end() {
            Head::Incomplete
        } else {
            Head::Other
        };
    }
    let at = r.at;
    let mut found = Step::No;
    for key in ["arguments", "parameters"] {
        r.at = at;
        found = r.key(key);
        if !matches!(found, Step::No) {
            break;
        }
    }
    match found {
        Step::Ok => {}
        Step::More => return Head::Incomplete,
        Step::No => return Head::Other,
    }
    r.skip_ws();
    match r.peek() {
        None => Head::Incomplete,
        Some('{') => Head::Found {
            name,
            consumed: r.at,
        },
        Some(_) => Head::Other,
    }
}

/// A step of reading, or why not.
enum Step {
    Ok,
    More,
    No,
}

/// A string read, or why not.
enum Text {
    Ok(String),
    More,
    No,
}

/// A cursor over a call's text.
struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl Reader<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn at_end(&self) -> bool {
        self.rest().trim_start().is_empty()
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// `"key" :`.
    fn key(&mut self, key: &str) -> Step {
        self.skip_ws();
        let quoted = format!("\"{key}\"");
        let rest = self.rest();
        if rest.len() < quoted.len() {
            return if quoted.starts_with(rest) {
                Step::More
            } else {
                Step::No
            };
        }
        if !rest.starts_with(&quoted) {
            return Step::No;
        }
        self.at += quoted.len();
        if self.eat(':') {
            Step::Ok
        } else if self.at_end() {
            Step::More
        } else {
            Step::No
        }
    }

    /// A JSON string.
    fn string(&mut self) -> Text {
        self.skip_ws();
        if self.peek().is_none() {
            return Text::More;
        }
        if self.peek() != Some('"') {
            return Text::No;
        }
        let mut scanner = JsonScanner::default();
        let (n, done) = scanner.feed(self.rest());
        if !done {
            return Text::More;
        }
        let raw = &self.rest()[..n];
        match serde_json::from_str::<String>(raw) {
            Ok(s) => {
                self.at += n;
                Text::Ok(s)
            }
            Err(_) => Text::No,
        }
    }
}

/// A whole call object in another key order: its name, its arguments as compact JSON, and the
/// bytes it took.
fn read_object(text: &str) -> Option<(String, String, usize)> {
    let start = text.len() - text.trim_start().len();
    let mut scanner = JsonScanner::default();
    let (n, done) = scanner.feed(&text[start..]);
    if !done {
        return None;
    }
    let value: Value = serde_json::from_str(&text[start..start + n]).ok()?;
    let name = value.get("name")?.as_str()?.to_string();
    let arguments = value.get("arguments").or_else(|| value.get("parameters"))?;
    let arguments = match arguments {
        // Some models write the arguments as a JSON string already.
        Value::String(s) if serde_json::from_str::<Value>(s).is_ok_and(|v| v.is_object()) => {
            s.clone()
        }
        Value::Object(_) => serde_json::to_string(arguments).ok()?,
        _ => return None,
    };
    Some((name, arguments, start + n))
}

/// Where the object whose remaining members `text` holds ends (just past its `}`).
fn object_end(text: &str) -> Option<usize> {
    let mut scanner = JsonScanner {
        depth: 1,
        started: true,
        ..JsonScanner::default()
    };
    match scanner.feed(text) {
        (n, true) => Some(n),
        _ => None,
    }
}

fn object_complete(text: &str) -> bool {
    let text = text.trim_start();
    let mut scanner = JsonScanner::default();
    scanner.feed(text).1
}

/// Finds where one JSON value ends, fed piece by piece: containers by depth, strings with their
/// escapes; a bare scalar ends at the first delimiter.
#[derive(Debug, Default, Clone)]
struct JsonScanner {
    depth: usize,
    in_string: bool,
    escaped: bool,
    started: bool,
    /// A scalar (number, `true`…) outside any container.
    bare: bool,
}

impl JsonScanner {
    /// Reads `text`; returns how many bytes belong to the value and whether it is complete.
    fn feed(&mut self, text: &str) -> (usize, bool) {
        for (i, c) in text.char_indices() {
            let end = i + c.len_utf8();
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if c == '\\' {
                    self.escaped = true;
                } else if c == '"' {
                    self.in_string = false;
                    if self.depth == 0 {
                        return (end, true);
                    }
                }
                continue;
            }
            if !self.started {
                if c.is_whitespace() {
                    continue;
                }
                self.started = true;
                match c {
                    '{' | '[' => self.depth = 1,
                    '"' => self.in_string = true,
                    _ => self.bare = true,
                }
                continue;
            }
            if self.bare {
                if c.is_whitespace() || matches!(c, ',' | '}' | ']' | ';') {
                    return (i, true);
                }
                continue;
            }
            match c {
                '"' => self.in_string = true,
                '{' | '[' => self.depth += 1,
                '}' | ']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return (end, true);
                    }
                }
                _ => {}
            }
        }
        (text.len(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a parser tells for `text` fed in pieces of `step` bytes (at char boundaries):
    /// content, then each call as (name, arguments).
    fn parse(syntax: ToolSyntax, text: &str, step: usize) -> (String, Vec<(String, String)>) {
        let mut p = CallParser::new(syntax, vec!["get_weather".into(), "add".into()]);
        let mut pieces = Vec::new();
        let mut i = 0;
        while i < text.len() {
            let mut j = (i + step).min(text.len());
            while !text.is_char_boundary(j) {
                j += 1;
            }
            pieces.extend(p.push(&text[i..j]));
            i = j;
        }
        pieces.extend(p.finish());
        fold(pieces)
    }

    /// Pieces as the content they add up to and each call as (name, arguments).
    fn fold(pieces: Vec<Piece>) -> (String, Vec<(String, String)>) {
        let mut content = String::new();
        let mut calls: Vec<(String, String)> = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Content(t) => content.push_str(&t),
                Piece::Call { index, name } => {
                    assert_eq!(index, calls.len());
                    calls.push((name, String::new()));
                }
                Piece::Arguments { index, text } => calls[index].1.push_str(&text),
            }
        }
        (content, calls)
    }

    fn all_steps(syntax: ToolSyntax, text: &str) -> (String, Vec<(String, String)>) {
        let whole = parse(syntax, text, text.len().max(1));
        for step in 1..8 {
            assert_eq!(parse(syntax, text, step), whole, "step {step} of {text:?}");
        }
        whole
    }

    fn call(name: &str, args: &str) -> (String, String) {
        (name.to_string(), args.to_string())
    }

    #[test]
    fn hermes_calls_with_text_before() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris \\\"}\\\"\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": [1, {\"b\": 2}]}}\n</tool_call>";
        let (content, calls) = all_steps(ToolSyntax::Hermes, text);
        assert_eq!(content, "Let me check.");
        assert_eq!(
            calls,
            vec![
                call("get_weather", "{\"city\": \"Paris \\\"}\\\"\"}"),
                call("add", "{\"a\": [1, {\"b\": 2}]}")
            ]
        );
    }

    #[test]
    fn plain_text_is_kept_verbatim() {
        for text in [
            "Hello <tool but not a call\n",
            "a < b and <tool_c",
            "  spaces  \n",
            "é<",
        ] {
            assert_eq!(
                all_steps(ToolSyntax::Hermes, text),
                (text.to_string(), vec![])
            );
            assert_eq!(
                all_steps(ToolSyntax::Mistral, text),
                (text.to_string(), vec![])
            );
        }
        for text in [
            "The answer is {4}",
            "  {4}",
            "<|python_tag|>print(1)",
            "{\"name\": \"rm\", \"parameters\": {}}",
        ] {
            assert_eq!(
                all_steps(ToolSyntax::Llama3Json, text),
                (text.to_string(), vec![])
            );
        }
        // After a call, what is not the next call is text again, separator included.
        assert_eq!(
            all_steps(
                ToolSyntax::Mistral,
                "[TOOL_CALLS] [{\"name\": \"add\", \"arguments\": {}}, oops"
            ),
            (", oops".to_string(), vec![call("add", "{}")])
        );
    }

    #[test]
    fn what_is_not_a_call_stays_content() {
        // An unknown function, broken JSON: the markup is kept, as the model wrote it.
        for text in [
            "<tool_call>\n{\"name\": \"rm\", \"arguments\": {}}\n</tool_call>",
            "<tool_call>\nnot json</tool_call>",
            "<tool_call>\n{\"name\": 3}",
        ] {
            assert_eq!(
                all_steps(ToolSyntax::Hermes, text),
                (text.to_string(), vec![])
            );
        }
    }

    #[test]
    fn other_key_orders_and_missing_close() {
        let text = "<tool_call>{\"arguments\": {\"x\": 1}, \"name\": \"add\"}";
        assert_eq!(
            all_steps(ToolSyntax::Hermes, text),
            (String::new(), vec![call("add", "{\"x\":1}")])
        );
        // Cut inside the arguments (max_tokens): the call so far.
        let text = "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"x\": 1";
        assert_eq!(
            all_steps(ToolSyntax::Hermes, text),
            (String::new(), vec![call("add", "{\"x\": 1")])
        );
    }

    #[test]
    fn llama3_json() {
        let text = "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}; {\"name\": \"add\", \"parameters\": {}}";
        assert_eq!(
            all_steps(ToolSyntax::Llama3Json, text),
            (
                String::new(),
                vec![
                    call("get_weather", "{\"city\": \"Oslo\"}"),
                    call("add", "{}")
                ]
            )
        );
        let text = "{\"name\": \"add\", \"arguments\": {\"a\": 1}}";
        assert_eq!(
            all_steps(ToolSyntax::Llama3Json, text).1,
            vec![call("add", "{\"a\": 1}")]
        );
    }

    #[test]
    fn the_tokenizers_own_sequences() {
        // A Hermes call as SmolLM2's token ids, decoded one token at a time as the engine
        // streams it: the parser finds the call whatever the token boundaries.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/smollm2");
        let tokenizer = kiln_tokenizer::Tokenizer::from_hf_dir(dir).unwrap();
        let text = "Checking.\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": [\"x}\"]}}\n</tool_call>";
        let ids = tokenizer.encode(text, false, false).unwrap();
        assert!(ids.len() > 20);
        let mut detok = tokenizer.detokenizer(true);
        let mut p = CallParser::new(ToolSyntax::Hermes, vec!["add".into()]);
        let mut pieces = Vec::new();
        for id in ids {
            pieces.extend(p.push(&detok.push(id).unwrap()));
        }
        pieces.extend(p.push(&detok.flush().unwrap()));
        pieces.extend(p.finish());
        assert_eq!(
            fold(pieces),
            (
                "Checking.".to_string(),
                vec![call("add", "{\"a\": 1, \"b\": [\"x}\"]}")]
            )
        );
    }

    #[test]
    fn keys_after_the_arguments_are_skipped() {
        let text = "[TOOL_CALLS] [{\"name\": \"add\", \"arguments\": {\"a\": 1}, \"id\": \"x}1\"}]";
        assert_eq!(
            all_steps(ToolSyntax::Mistral, text),
            (String::new(), vec![call("add", "{\"a\": 1}")])
        );
    }

    #[test]
    fn mistral() {
        let text = "[TOOL_CALLS] [{\"name\": \"add\", \"arguments\": {\"a\": 1}}, {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}]";
        assert_eq!(
            all_steps(ToolSyntax::Mistral, text),
            (
                String::new(),
                vec![
                    call("add", "{\"a\": 1}"),
                    call("get_weather", "{\"city\": \"Rome\"}")
                ]
            )
        );
    }
}
