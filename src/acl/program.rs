//! A templated glob compiled once, run against a topic with one identity's
//! claim values (`Acl::bind` keeps the values, not a regex per identity).
//!
//! [`Program`] is a Thompson NFA over the topic's bytes, built from the
//! [`Token`]s globset reads, with the same meaning as the regex globset
//! builds from them: `(?-u)` and `dot_matches_new_line`, so `?`, `*` and a
//! class each step over bytes, not characters (`?` does not match `ü`), and
//! the whole topic must match. A claim is an instruction that matches the
//! value's bytes, exactly and nothing else, so no value can widen a rule.
//! [`Program::is_match`] simulates the NFA breadth-first, so no topic or
//! value makes it backtrack: time is at most the topic's length times the
//! program's size plus the values' lengths, and memory the latter.

use super::tokens::Token;

/// The bytes a `[...]` class matches: one bit per byte value, 256 bits.
type ByteSet = [u64; 4];

/// A compiled templated glob.
#[derive(Debug)]
pub(super) struct Program {
    insts: Vec<Inst>,
    /// The byte sets of `[...]` classes.
    sets: Vec<ByteSet>,
    /// The literal bytes every match starts with, checked before the NFA
    /// runs: most templated rules begin with a literal such as `user.`.
    prefix: Box<[u8]>,
}

#[derive(Debug, Clone, Copy)]
enum Inst {
    Byte(u8),
    AnyByte,
    /// One byte from `sets[n]`.
    Set(usize),
    /// The value of claim `n` (an index into the policy's claim values).
    Claim(usize),
    Split(usize, usize),
    Jump(usize),
    Match,
}

/// A thread of the NFA simulation: at `pc`, and when that is a claim,
/// `at` bytes into its value.
#[derive(Debug, Clone, Copy)]
struct Thread {
    pc: usize,
    at: usize,
}

/// The simulation's buffers, reused across the programs of one check.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    current: Vec<Thread>,
    next: Vec<Thread>,
    /// `seen[pc] == step` when `pc` was reached at this step already.
    seen: Vec<usize>,
    stack: Vec<usize>,
}

impl Program {
    pub(super) fn compile(tokens: &[Token]) -> Self {
        let mut program = Program {
            insts: Vec::new(),
            sets: Vec::new(),
            prefix: Box::default(),
        };
        program.emit(tokens);
        program.insts.push(Inst::Match);
        let prefix: Vec<u8> = program
            .insts
            .iter()
            .map_while(|inst| match inst {
                Inst::Byte(b) => Some(*b),
                _ => None,
            })
            .collect();
        program.prefix = prefix.into();
        program
    }

    fn emit(&mut self, tokens: &[Token]) {
        for token in tokens {
            match token {
                Token::Literal(c) => {
                    let mut buf = [0; 4];
                    for &b in c.encode_utf8(&mut buf).as_bytes() {
                        self.insts.push(Inst::Byte(b));
                    }
                }
                Token::Any => self.insts.push(Inst::AnyByte),
                Token::ZeroOrMore => self.any_bytes(),
                Token::RecursivePrefix => self.recursive_prefix(),
                Token::RecursiveSuffix => {
                    self.insts.push(Inst::Byte(b'/'));
                    self.any_bytes();
                }
                Token::RecursiveZeroOrMore => {
                    self.insts.push(Inst::Byte(b'/'));
                    self.recursive_prefix();
                }
                Token::Class { negated, ranges } => {
                    self.sets.push(byte_set(*negated, ranges));
                    self.insts.push(Inst::Set(self.sets.len() - 1));
                }
                Token::Alternates(alternatives) => {
                    let mut jumps = Vec::new();
                    for (i, alternative) in alternatives.iter().enumerate() {
                        if i + 1 == alternatives.len() {
                            self.emit(alternative);
                        } else {
                            let split = self.insts.len();
                            self.insts.push(Inst::Split(split + 1, 0));
                            self.emit(alternative);
                            jumps.push(self.insts.len());
                            self.insts.push(Inst::Jump(0));
                            self.insts[split] = Inst::Split(split + 1, self.insts.len());
                        }
                    }
                    let end = self.insts.len();
                    for jump in jumps {
                        self.insts[jump] = Inst::Jump(end);
                    }
                }
                Token::Claim(n) => self.insts.push(Inst::Claim(*n)),
            }
        }
    }

    /// `.*`
    fn any_bytes(&mut self) {
        let start = self.insts.len();
        self.insts.push(Inst::Split(start + 1, start + 3));
        self.insts.push(Inst::AnyByte);
        self.insts.push(Inst::Jump(start));
    }

    /// `(?:/?|.*/)`, which is nothing or `.*/`.
    fn recursive_prefix(&mut self) {
        let split = self.insts.len();
        self.insts.push(Inst::Split(split + 1, 0));
        self.any_bytes();
        self.insts.push(Inst::Byte(b'/'));
        self.insts[split] = Inst::Split(split + 1, self.insts.len());
    }

    /// Whether the whole `topic` matches, claim `n` standing for
    /// `values[n]`. A claim without a value matches nothing (`bind` drops
    /// such rules before they get here).
    pub(super) fn is_match(
        &self,
        values: &[Option<Box<str>>],
        topic: &str,
        scratch: &mut Scratch,
    ) -> bool {
        let Some(rest) = topic.as_bytes().strip_prefix(&*self.prefix) else {
            return false;
        };
        let value = |n: usize| values.get(n).and_then(Option::as_deref).map(str::as_bytes);
        let Scratch {
            current,
            next,
            seen,
            stack,
        } = scratch;
        current.clear();
        seen.clear();
        seen.resize(self.insts.len(), 0);
        let mut step = 1;
        self.add(self.prefix.len(), step, current, seen, stack, &value);
        for &byte in rest {
            if current.is_empty() {
                return false;
            }
            step += 1;
            next.clear();
            for &Thread { pc, at } in current.iter() {
                match self.insts.get(pc) {
                    Some(Inst::Byte(b)) if *b == byte => {}
                    Some(Inst::AnyByte) => {}
                    Some(Inst::Set(n)) if self.sets.get(*n).is_some_and(|s| contains(s, byte)) => {}
                    Some(Inst::Claim(n)) => {
                        let Some(value) = value(*n) else { continue };
                        if value.get(at) != Some(&byte) {
                            continue;
                        }
                        if at + 1 < value.len() {
                            // The only way to be `at + 1` into this claim
                            // now, so no duplicate to check for.
                            next.push(Thread { pc, at: at + 1 });
                            continue;
                        }
                    }
                    _ => continue,
                }
                self.add(pc + 1, step, next, seen, stack, &value);
            }
            std::mem::swap(current, next);
        }
        current
            .iter()
            .any(|thread| matches!(self.insts.get(thread.pc), Some(Inst::Match)))
    }

    /// Adds the threads reachable from `pc` without reading a byte.
    fn add<'v>(
        &self,
        pc: usize,
        step: usize,
        threads: &mut Vec<Thread>,
        seen: &mut [usize],
        stack: &mut Vec<usize>,
        value: &dyn Fn(usize) -> Option<&'v [u8]>,
    ) {
        stack.clear();
        stack.push(pc);
        while let Some(pc) = stack.pop() {
            let (Some(inst), Some(mark)) = (self.insts.get(pc), seen.get_mut(pc)) else {
                continue;
            };
            if *mark == step {
                continue;
            }
            *mark = step;
            match *inst {
                Inst::Jump(to) => stack.push(to),
                Inst::Split(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                Inst::Claim(n) => match value(n) {
                    Some([]) => stack.push(pc + 1),
                    Some(_) => threads.push(Thread { pc, at: 0 }),
                    None => {}
                },
                Inst::Byte(_) | Inst::AnyByte | Inst::Set(_) | Inst::Match => {
                    threads.push(Thread { pc, at: 0 })
                }
            }
        }
    }
}

fn contains(set: &ByteSet, byte: u8) -> bool {
    set[usize::from(byte >> 6)] >> (byte & 63) & 1 == 1
}

fn insert(set: &mut ByteSet, byte: u8) {
    set[usize::from(byte >> 6)] |= 1 << (byte & 63);
}

/// The bytes a class matches in globset's regex. Each end of a range is
/// written as its escaped UTF-8 bytes and, with Unicode off, the regex reads
/// a class byte by byte: `[a-é]` is `[a-\xc3\xa9]`, the range `a` to `\xc3`
/// plus the byte `\xa9`. So a range runs from the last byte of its low end
/// to the first byte of its high end, and the other bytes stand alone.
fn byte_set(negated: bool, ranges: &[(char, char)]) -> ByteSet {
    let mut set = [0; 4];
    for &(lo, hi) in ranges {
        let (mut lo_buf, mut hi_buf) = ([0; 4], [0; 4]);
        let lo = lo.encode_utf8(&mut lo_buf).as_bytes();
        let hi = hi.encode_utf8(&mut hi_buf).as_bytes();
        if lo == hi {
            lo.iter().for_each(|&b| insert(&mut set, b));
            continue;
        }
        let (Some((&from, lo_rest)), Some((&to, hi_rest))) = (lo.split_last(), hi.split_first())
        else {
            continue;
        };
        lo_rest.iter().for_each(|&b| insert(&mut set, b));
        (from..=to).for_each(|b| insert(&mut set, b));
        hi_rest.iter().for_each(|&b| insert(&mut set, b));
    }
    if negated {
        set.iter_mut().for_each(|word| *word = !*word);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_set_holds_one_bit_per_byte_value() {
        assert_eq!(size_of::<ByteSet>() * 8, usize::from(u8::MAX) + 1);
        let mut set = ByteSet::default();
        insert(&mut set, u8::MAX);
        insert(&mut set, 0);
        assert!(contains(&set, u8::MAX) && contains(&set, 0));
        assert!(!(1..u8::MAX).any(|byte| contains(&set, byte)));
    }
}
