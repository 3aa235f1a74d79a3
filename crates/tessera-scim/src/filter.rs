//! SCIM filters (RFC 7644 §3.4.2.2): tokenizer, recursive-descent parser and AST.
//!
//! Written here rather than taken from `scim_v2` (evaluated: a sound RFC parser) because
//! Tessera must also accept two forms Microsoft Entra ID sends that the RFC grammar rejects:
//! unquoted comparison values (`externalId eq jyoung`) and a sub-attribute after a value path
//! (`emails[type eq "work"].value eq "a@b.c"`, read as `emails[type eq "work" and value eq "a@b.c"]`).
//! The AST is also the one Tessera translates to SQL and evaluates in memory.
//!
//! Operators, logical words and attribute names are case-insensitive; nesting (groups, `not`,
//! value paths), the number of terms and the length of the text are limited.

use std::fmt;

use serde_json::Number;

use crate::ScimError;

/// An attribute path: optional schema URN, attribute name, optional sub-attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    pub uri: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

impl AttrPath {
    pub fn new(name: &str) -> Self {
        AttrPath {
            uri: None,
            name: name.to_owned(),
            sub: None,
        }
    }

    pub fn with_sub(name: &str, sub: &str) -> Self {
        AttrPath {
            uri: None,
            name: name.to_owned(),
            sub: Some(sub.to_owned()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    pub const ALL: [CompareOp; 9] = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Co,
        CompareOp::Sw,
        CompareOp::Ew,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        CompareOp::ALL
            .into_iter()
            .find(|op| word.eq_ignore_ascii_case(op.as_str()))
    }
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    Str(String),
    Number(Number),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `attr pr`
    Present(AttrPath),
    /// `attr op value`
    Compare(AttrPath, CompareOp, CompValue),
    /// `attr[filter]`: some value of the multi-valued `attr` matches `filter`, whose paths name
    /// sub-attributes of `attr`.
    ValuePath(AttrPath, Box<Filter>),
    Not(Box<Filter>),
    /// Two or more operands, none of them an `And` (chains are flattened).
    And(Vec<Filter>),
    /// Two or more operands, none of them an `Or`.
    Or(Vec<Filter>),
}

/// Bounds on what a filter may cost to parse and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterLimits {
    /// Longest filter text, in bytes.
    pub max_len: usize,
    /// Deepest nesting of groups, `not` and value paths.
    pub max_depth: usize,
    /// Most attribute expressions (comparisons and presence tests).
    pub max_terms: usize,
}

impl Default for FilterLimits {
    fn default() -> Self {
        FilterLimits {
            max_len: 4096,
            max_depth: 16,
            max_terms: 200,
        }
    }
}

/// Parses a filter, answering bad input with `400 invalidFilter` and a message saying where.
pub fn parse_filter(text: &str, limits: FilterLimits) -> Result<Filter, ScimError> {
    if text.len() > limits.max_len {
        return Err(ScimError::invalid_filter(format!(
            "the filter is {} bytes long; at most {} are accepted",
            text.len(),
            limits.max_len
        )));
    }
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
        terms: 0,
        limits,
        in_value_path: false,
    };
    if parser.tokens.is_empty() {
        return Err(ScimError::invalid_filter("the filter is empty"));
    }
    let filter = parser.or_expr()?;
    if let Some((tok, at)) = parser.tokens.get(parser.pos) {
        return Err(unexpected(tok, *at));
    }
    Ok(filter)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Str(String),
    Word(String),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
            Tok::LBracket => f.write_str("'['"),
            Tok::RBracket => f.write_str("']'"),
            Tok::Str(s) => write!(f, "the string {s:?}"),
            Tok::Word(w) => write!(f, "'{w}'"),
        }
    }
}

fn unexpected(tok: &Tok, at: usize) -> ScimError {
    ScimError::invalid_filter(format!("unexpected {tok} at position {}", at + 1))
}

fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, ScimError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' | b')' | b'[' | b']' => {
                let tok = match c {
                    b'(' => Tok::LParen,
                    b')' => Tok::RParen,
                    b'[' => Tok::LBracket,
                    _ => Tok::RBracket,
                };
                tokens.push((tok, i));
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => {
                            return Err(ScimError::invalid_filter(format!(
                                "the string starting at position {} is not closed",
                                start + 1
                            )));
                        }
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                let literal = &text[start..i];
                let value: String = serde_json::from_str(literal).map_err(|_| {
                    ScimError::invalid_filter(format!(
                        "the string at position {} is not valid JSON",
                        start + 1
                    ))
                })?;
                tokens.push((Tok::Str(value), start));
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(
                        bytes[i],
                        b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b'[' | b']' | b'"'
                    )
                {
                    i += 1;
                }
                tokens.push((Tok::Word(text[start..i].to_owned()), start));
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
    terms: usize,
    limits: FilterLimits,
    in_value_path: bool,
}

fn is_word(tok: Option<&(Tok, usize)>, word: &str) -> bool {
    matches!(tok, Some((Tok::Word(w), _)) if w.eq_ignore_ascii_case(word))
}

impl Parser {
    fn peek(&self) -> Option<&(Tok, usize)> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Result<(Tok, usize), ScimError> {
        let t = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or_else(|| ScimError::invalid_filter("the filter ends too early"))?;
        self.pos += 1;
        Ok(t)
    }

    fn enter(&mut self) -> Result<(), ScimError> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(ScimError::invalid_filter(format!(
                "the filter nests deeper than {} levels",
                self.limits.max_depth
            )));
        }
        Ok(())
    }

    fn term(&mut self) -> Result<(), ScimError> {
        self.terms += 1;
        if self.terms > self.limits.max_terms {
            return Err(ScimError::invalid_filter(format!(
                "the filter has more than {} terms",
                self.limits.max_terms
            )));
        }
        Ok(())
    }

    fn or_expr(&mut self) -> Result<Filter, ScimError> {
        let mut items = vec![self.and_expr()?];
        while is_word(self.peek(), "or") {
            self.pos += 1;
            items.push(self.and_expr()?);
        }
        Ok(join(items, Filter::Or))
    }

    fn and_expr(&mut self) -> Result<Filter, ScimError> {
        let mut items = vec![self.unary()?];
        while is_word(self.peek(), "and") {
            self.pos += 1;
            items.push(self.unary()?);
        }
        Ok(join(items, Filter::And))
    }

    fn unary(&mut self) -> Result<Filter, ScimError> {
        if is_word(self.peek(), "not")
            && matches!(self.tokens.get(self.pos + 1), Some((Tok::LParen, _)))
        {
            self.pos += 1;
            let inner = self.group()?;
            return Ok(Filter::Not(Box::new(inner)));
        }
        if matches!(self.peek(), Some((Tok::LParen, _))) {
            return self.group();
        }
        self.attr_expr()
    }

    /// `( filter )`
    fn group(&mut self) -> Result<Filter, ScimError> {
        let (open, at) = self.next()?;
        if open != Tok::LParen {
            return Err(unexpected(&open, at));
        }
        self.enter()?;
        let inner = self.or_expr()?;
        match self.next()? {
            (Tok::RParen, _) => {}
            (tok, at) => return Err(unexpected(&tok, at)),
        }
        self.depth -= 1;
        Ok(inner)
    }

    fn attr_expr(&mut self) -> Result<Filter, ScimError> {
        let (tok, at) = self.next()?;
        let Tok::Word(word) = tok else {
            return Err(unexpected(&tok, at));
        };
        let path = parse_attr_path(&word, at)?;
        if matches!(self.peek(), Some((Tok::LBracket, _))) {
            return self.value_path(path, at);
        }
        self.comparison(path)
    }

    /// `attr pr` or `attr op value`, after the path.
    fn comparison(&mut self, path: AttrPath) -> Result<Filter, ScimError> {
        self.term()?;
        let (tok, at) = self.next()?;
        let Tok::Word(op_word) = &tok else {
            return Err(unexpected(&tok, at));
        };
        if op_word.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let op = CompareOp::parse(op_word).ok_or_else(|| {
            ScimError::invalid_filter(format!(
                "'{op_word}' at position {} is not an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)",
                at + 1
            ))
        })?;
        let (value_tok, value_at) = self.next()?;
        let value = match value_tok {
            Tok::Str(s) => CompValue::Str(s),
            Tok::Word(w) => word_value(&w),
            other => return Err(unexpected(&other, value_at)),
        };
        Ok(Filter::Compare(path, op, value))
    }

    /// `attr[filter]`, and Entra's `attr[filter].sub op value`.
    fn value_path(&mut self, attr: AttrPath, at: usize) -> Result<Filter, ScimError> {
        if self.in_value_path {
            return Err(ScimError::invalid_filter(format!(
                "a value path at position {} is nested inside another value path",
                at + 1
            )));
        }
        if attr.sub.is_some() {
            return Err(ScimError::invalid_filter(format!(
                "a value path at position {} must name an attribute, not a sub-attribute",
                at + 1
            )));
        }
        self.pos += 1; // '['
        self.enter()?;
        self.in_value_path = true;
        let inner = self.or_expr()?;
        self.in_value_path = false;
        match self.next()? {
            (Tok::RBracket, _) => {}
            (tok, at) => return Err(unexpected(&tok, at)),
        }
        self.depth -= 1;
        // Entra: `emails[type eq "work"].value eq "x"`.
        let inner = match self.peek() {
            Some((Tok::Word(w), sub_at)) if w.starts_with('.') => {
                let sub_at = *sub_at;
                let sub = w[1..].to_owned();
                if !is_attr_name(&sub) {
                    return Err(ScimError::invalid_filter(format!(
                        "'{sub}' at position {} is not an attribute name",
                        sub_at + 2
                    )));
                }
                self.pos += 1;
                let condition = self.comparison(AttrPath::new(&sub))?;
                join(vec![inner, condition], Filter::And)
            }
            _ => inner,
        };
        Ok(Filter::ValuePath(attr, Box::new(inner)))
    }
}

/// Builds an n-ary node from one or more items, flattening nested nodes of the same kind.
fn join(items: Vec<Filter>, make: fn(Vec<Filter>) -> Filter) -> Filter {
    if items.len() == 1 {
        return items.into_iter().next().expect("one item");
    }
    let is_and = matches!(make(Vec::new()), Filter::And(_));
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Filter::And(inner) if is_and => flat.extend(inner),
            Filter::Or(inner) if !is_and => flat.extend(inner),
            other => flat.push(other),
        }
    }
    make(flat)
}

/// A value written without quotes: `true`, `false`, `null`, a number, or (as Entra sends it)
/// a bare string.
fn word_value(word: &str) -> CompValue {
    match word.to_ascii_lowercase().as_str() {
        "true" => CompValue::Bool(true),
        "false" => CompValue::Bool(false),
        "null" => CompValue::Null,
        _ => match serde_json::from_str::<Number>(word) {
            Ok(n)
                if word.bytes().all(|b| {
                    b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
                }) =>
            {
                CompValue::Number(n)
            }
            _ => CompValue::Str(word.to_owned()),
        },
    }
}

/// `ATTRNAME = ALPHA *(nameChar)`, plus `$ref`.
fn is_attr_name(s: &str) -> bool {
    if s == "$ref" {
        return true;
    }
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `[URN ":"] name ["." sub]`.
fn parse_attr_path(word: &str, at: usize) -> Result<AttrPath, ScimError> {
    let invalid = || {
        ScimError::invalid_filter(format!(
            "'{word}' at position {} is not an attribute path",
            at + 1
        ))
    };
    let (uri, rest) = if word.len() > 4 && word[..4].eq_ignore_ascii_case("urn:") {
        let split = word.rfind(':').ok_or_else(invalid)?;
        (Some(word[..split].to_owned()), &word[split + 1..])
    } else {
        (None, word)
    };
    let (name, sub) = match rest.split_once('.') {
        Some((name, sub)) => (name, Some(sub)),
        None => (rest, None),
    };
    if !is_attr_name(name) || sub.is_some_and(|s| !is_attr_name(s)) {
        return Err(invalid());
    }
    Ok(AttrPath {
        uri,
        name: name.to_owned(),
        sub: sub.map(str::to_owned),
    })
}

/// A PATCH operation's `path` (RFC 7644 §3.5.2): `attrPath`, or `attr[filter]` optionally
/// followed by `.sub`, as in `emails[type eq "work"].value`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    /// The sub-attribute after a value filter (`.value` in `emails[type eq "work"].value`).
    pub sub: Option<String>,
}

/// Parses a PATCH path, answering bad input with `400 invalidPath`.
pub fn parse_path(text: &str, limits: FilterLimits) -> Result<PatchPath, ScimError> {
    let invalid = |why: String| {
        ScimError::bad_request(
            crate::ScimType::InvalidPath,
            format!("the path '{text}' is not valid: {why}"),
        )
    };
    let text = text.trim();
    if text.len() > limits.max_len {
        return Err(invalid(format!("longer than {} bytes", limits.max_len)));
    }
    let Some(open) = text.find('[') else {
        let attr = parse_attr_path(text, 0).map_err(|e| invalid(e.detail))?;
        return Ok(PatchPath {
            attr,
            filter: None,
            sub: None,
        });
    };
    let close = text
        .rfind(']')
        .filter(|&close| close > open)
        .ok_or_else(|| invalid("the '[' is not closed".into()))?;
    let attr = parse_attr_path(&text[..open], 0).map_err(|e| invalid(e.detail))?;
    if attr.sub.is_some() {
        return Err(invalid(
            "a value filter must follow an attribute, not a sub-attribute".into(),
        ));
    }
    let filter = parse_filter(&text[open + 1..close], limits).map_err(|e| invalid(e.detail))?;
    let rest = &text[close + 1..];
    let sub = match rest.strip_prefix('.') {
        None if rest.is_empty() => None,
        Some(sub) if is_attr_name(sub) => Some(sub.to_owned()),
        _ => {
            return Err(invalid(format!(
                "'{rest}' after the filter is not '.subAttribute'"
            )));
        }
    };
    Ok(PatchPath {
        attr,
        filter: Some(filter),
        sub,
    })
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(uri) = &self.uri {
            write!(f, "{uri}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl fmt::Display for CompValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompValue::Str(s) => write!(f, "{}", serde_json::Value::from(s.as_str())),
            CompValue::Number(n) => write!(f, "{n}"),
            CompValue::Bool(b) => write!(f, "{b}"),
            CompValue::Null => f.write_str("null"),
        }
    }
}

/// The canonical text of a filter; parsing it gives the same filter back.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Present(p) => write!(f, "{p} pr"),
            Filter::Compare(p, op, v) => write!(f, "{p} {} {v}", op.as_str()),
            Filter::ValuePath(p, inner) => write!(f, "{p}[{inner}]"),
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::And(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    match item {
                        Filter::Or(_) => write!(f, "({item})")?,
                        _ => write!(f, "{item}")?,
                    }
                }
                Ok(())
            }
            Filter::Or(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    write!(f, "{item}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
