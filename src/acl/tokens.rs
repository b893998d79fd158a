//! globset's reading of a glob, reproduced with the `${claim}`s left open.
//!
//! A filled template is the glob text with each claim written as the braced
//! literal `{value}` (see `literal` in `acl.rs`). To compile a template once
//! for every identity, [`parse`] follows globset 0.4's parser step by step
//! over the template, reading each claim as one [`Token::Claim`] where
//! globset would read that braced literal. The reading is context-sensitive
//! (whether `**` is recursive depends on the raw characters beside it), so
//! it is not rebuilt from first principles: the steps below are globset's,
//! and [`regex`] renders the tokens into the regex globset would build, so
//! that `Acl::compile` can check, pattern by pattern, that both readings
//! agree and fall back to per-identity compiling when they do not.
//!
//! The parsing steps are adapted from globset 0.4.19 (`src/glob.rs`),
//! available under the MIT license or the Unlicense.

use std::iter::Peekable;
use std::path::is_separator;

/// One element of a glob, as globset's `Token`, plus the claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    Literal(char),
    /// `?`: any one byte.
    Any,
    /// `*`: any bytes.
    ZeroOrMore,
    /// `**/` at the start: nothing, or anything ending in `/`.
    RecursivePrefix,
    /// `/**` at the end: `/` and anything.
    RecursiveSuffix,
    /// `/**/` inside: `/`, or `/` anything `/`.
    RecursiveZeroOrMore,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Alternates(Vec<Vec<Token>>),
    /// The template's claim number `n` (an index into the ACL's claim
    /// table): exactly the claim's value.
    Claim(usize),
}

/// What the parser reads: a glob character, or a whole claim reference.
#[derive(Debug, Clone, Copy)]
pub(super) enum Item {
    Char(char),
    Claim(usize),
}

impl Item {
    /// The raw character globset sees first: a claim opens with `{`.
    fn first_char(self) -> char {
        match self {
            Item::Char(c) => c,
            Item::Claim(_) => '{',
        }
    }
}

/// The tokens globset would read from the template, or `None` where the
/// template is not a glob globset accepts or has a claim somewhere this
/// reading does not expect (after `\`, inside a class).
pub(super) fn parse(items: impl IntoIterator<Item = Item>) -> Option<Vec<Token>> {
    let mut parser = Parser {
        items: items.into_iter().peekable(),
        prev: None,
        cur: None,
        alternates_stack: Vec::new(),
        branches: vec![Vec::new()],
    };
    parser.parse()?;
    if parser.branches.len() != 1 {
        return None;
    }
    parser.branches.pop()
}

/// globset's `Parser`, field for field; the comments there apply.
struct Parser<I: Iterator<Item = Item>> {
    items: Peekable<I>,
    /// The raw character before `cur`: decides whether `**` is recursive.
    prev: Option<char>,
    /// The raw character last read; `}` after a claim, as after `{value}`.
    cur: Option<char>,
    /// Where in `branches` each open `{` started.
    alternates_stack: Vec<usize>,
    /// The alternatives being read; tokens go to the last one.
    branches: Vec<Vec<Token>>,
}

impl<I: Iterator<Item = Item>> Parser<I> {
    fn parse(&mut self) -> Option<()> {
        while let Some(item) = self.bump() {
            match item {
                // globset pushes an alternate at `{`, literals, and pops it
                // at `}`: one token in the current branch.
                Item::Claim(n) => self.push_token(Token::Claim(n))?,
                Item::Char('?') => self.push_token(Token::Any)?,
                Item::Char('*') => self.parse_star()?,
                Item::Char('[') => self.parse_class()?,
                Item::Char('{') => {
                    self.alternates_stack.push(self.branches.len());
                    self.branches.push(Vec::new());
                }
                Item::Char('}') => {
                    let start = self.alternates_stack.pop()?;
                    if start > self.branches.len() {
                        return None;
                    }
                    let alternates = self.branches.drain(start..).collect();
                    self.push_token(Token::Alternates(alternates))?;
                }
                Item::Char(',') if !self.alternates_stack.is_empty() => {
                    self.branches.push(Vec::new());
                }
                // `backslash_escape(true)`: the next character, whatever it is.
                Item::Char('\\') => match self.bump()? {
                    Item::Char(c) => self.push_token(Token::Literal(c))?,
                    Item::Claim(_) => return None,
                },
                Item::Char(c) => self.push_token(Token::Literal(c))?,
            }
        }
        Some(())
    }

    fn push_token(&mut self, token: Token) -> Option<()> {
        self.branches.last_mut()?.push(token);
        Some(())
    }

    fn pop_token(&mut self) -> Option<Token> {
        self.branches.last_mut()?.pop()
    }

    fn have_tokens(&self) -> Option<bool> {
        Some(!self.branches.last()?.is_empty())
    }

    fn parse_star(&mut self) -> Option<()> {
        let prev = self.prev;
        if self.peek() != Some('*') {
            return self.push_token(Token::ZeroOrMore);
        }
        self.bump();
        if !self.have_tokens()? {
            if !self.peek().is_none_or(is_separator) {
                self.push_token(Token::ZeroOrMore)?;
                self.push_token(Token::ZeroOrMore)?;
            } else {
                self.push_token(Token::RecursivePrefix)?;
                self.bump();
            }
            return Some(());
        }
        if !prev.is_some_and(is_separator)
            && (self.branches.len() <= 1 || (prev != Some(',') && prev != Some('{')))
        {
            self.push_token(Token::ZeroOrMore)?;
            return self.push_token(Token::ZeroOrMore);
        }
        let is_suffix = match self.peek() {
            None => {
                self.bump();
                true
            }
            Some(',' | '}') if self.branches.len() >= 2 => true,
            Some(c) if is_separator(c) => {
                self.bump();
                false
            }
            _ => {
                self.push_token(Token::ZeroOrMore)?;
                return self.push_token(Token::ZeroOrMore);
            }
        };
        // globset drops the token before `**` (normally the `/`).
        let token = match self.pop_token()? {
            Token::RecursivePrefix => Token::RecursivePrefix,
            Token::RecursiveSuffix => Token::RecursiveSuffix,
            _ if is_suffix => Token::RecursiveSuffix,
            _ => Token::RecursiveZeroOrMore,
        };
        self.push_token(token)
    }

    /// A `[...]` class; globset has no escapes inside one.
    fn parse_class(&mut self) -> Option<()> {
        let mut ranges: Vec<(char, char)> = Vec::new();
        let negated = matches!(self.peek(), Some('!' | '^'));
        if negated {
            self.bump();
        }
        let mut first = true;
        let mut in_range = false;
        loop {
            let Item::Char(c) = self.bump()? else {
                return None;
            };
            match c {
                ']' if first => ranges.push((']', ']')),
                ']' => break,
                '-' if first => ranges.push(('-', '-')),
                '-' if in_range => {
                    let last = ranges.last_mut()?;
                    last.1 = '-';
                    if last.1 < last.0 {
                        return None;
                    }
                    in_range = false;
                }
                '-' => in_range = true,
                c => {
                    if in_range {
                        let last = ranges.last_mut()?;
                        last.1 = c;
                        if last.1 < last.0 {
                            return None;
                        }
                    } else {
                        ranges.push((c, c));
                    }
                    in_range = false;
                }
            }
            first = false;
        }
        if in_range {
            ranges.push(('-', '-'));
        }
        self.push_token(Token::Class { negated, ranges })
    }

    fn bump(&mut self) -> Option<Item> {
        self.prev = self.cur;
        let item = self.items.next();
        self.cur = item.map(|item| match item {
            Item::Char(c) => c,
            Item::Claim(_) => '}',
        });
        item
    }

    fn peek(&mut self) -> Option<char> {
        self.items.peek().map(|item| item.first_char())
    }
}

/// The regex globset builds for these tokens (`Tokens::to_regex_with` with
/// this ACL's options) when every claim has the value `stand_in`.
pub(super) fn regex(tokens: &[Token], stand_in: &str) -> String {
    let mut re = String::from("(?-u)^");
    if tokens == [Token::RecursivePrefix] {
        re.push_str(".*$");
        return re;
    }
    render(tokens, stand_in, &mut re);
    re.push('$');
    re
}

fn render(tokens: &[Token], stand_in: &str, re: &mut String) {
    for token in tokens {
        match token {
            Token::Literal(c) => escaped_literal(*c, re),
            Token::Any => re.push('.'),
            Token::ZeroOrMore => re.push_str(".*"),
            Token::RecursivePrefix => re.push_str("(?:/?|.*/)"),
            Token::RecursiveSuffix => re.push_str("/.*"),
            Token::RecursiveZeroOrMore => re.push_str("(?:/|/.*/)"),
            Token::Class { negated, ranges } => {
                re.push('[');
                if *negated {
                    re.push('^');
                }
                for &(lo, hi) in ranges {
                    escaped_literal(lo, re);
                    if lo != hi {
                        re.push('-');
                        escaped_literal(hi, re);
                    }
                }
                re.push(']');
            }
            // `empty_alternates(true)`: every alternative is kept.
            Token::Alternates(alternatives) if !alternatives.is_empty() => {
                re.push_str("(?:");
                for (i, alternative) in alternatives.iter().enumerate() {
                    if i > 0 {
                        re.push('|');
                    }
                    render(alternative, stand_in, re);
                }
                re.push(')');
            }
            Token::Alternates(_) => {}
            Token::Claim(_) => {
                re.push_str("(?:");
                stand_in.chars().for_each(|c| escaped_literal(c, re));
                re.push(')');
            }
        }
    }
}

/// globset's `char_to_escaped_literal`: ASCII through `regex_syntax::escape`,
/// every other byte of the UTF-8 encoding as `\xNN`.
fn escaped_literal(c: char, re: &mut String) {
    let mut buf = [0; 4];
    for &b in c.encode_utf8(&mut buf).as_bytes() {
        if b.is_ascii() {
            if b"\\.+*?()|[]{}^$#&-~".contains(&b) {
                re.push('\\');
            }
            re.push(char::from(b));
        } else {
            re.push_str(&format!("\\x{b:02x}"));
        }
    }
}
