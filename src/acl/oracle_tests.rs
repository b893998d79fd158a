//! Templates compiled once must decide exactly as filling every template
//! with the identity's values and compiling the result with globset: that
//! straightforward compile is the oracle, and a property test pits the two
//! against each other on generated templates, claim values and topics.

use std::sync::Arc;

use globset::GlobMatcher;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::claims::{claim_matches, scalar_text};
use super::compile::{compile_claims, parse_effect};
use super::globs::build_globs;
use super::*;
use crate::auth::Identity;
use Decision::{Allow, Deny};

/// A rule as the oracle binds it: its templates filled and compiled.
type OracleRule = (usize, Result<Vec<GlobMatcher>, globset::Error>, Effect);

/// The oracle: a plain `Acl::bind`, every template filled with the
/// identity's escaped claim values and compiled by globset.
fn oracle_bind(raw: &RawAcl, identity: &Identity) -> (Effect, Vec<OracleRule>) {
    let mut ignored = Vec::new();
    let default = parse_effect(&raw.default, "", &mut ignored);
    let mut rules = Vec::new();
    for (index, rule) in raw.rules.iter().enumerate() {
        let claims = compile_claims(&rule.claims, "", &mut ignored);
        if !claims
            .iter()
            .all(|(path, expected)| claim_matches(path.lookup(&identity.claims), expected))
        {
            continue;
        }
        let value = |path: &ClaimPath| path.lookup(&identity.claims).and_then(scalar_text);
        let filled: Option<Vec<String>> = rule
            .topics
            .iter()
            .map(|pattern| Template::parse(pattern).ok()?.try_fill(&value))
            .collect();
        let Some(filled) = filled else { continue };
        let effect = parse_effect(&rule.effect, "", &mut ignored);
        rules.push((index, build_globs(filled), effect));
    }
    (default, rules)
}

fn oracle_check((default, rules): &(Effect, Vec<OracleRule>), topic: &str) -> Decision {
    for (index, globs, effect) in rules {
        match globs {
            Ok(globs) if globs.iter().any(|glob| glob.is_match(topic)) => {
                return decide(*effect, Some(*index));
            }
            Ok(_) => {}
            // A deny rule that could not be built denied everything after it.
            Err(_) if *effect == Effect::Deny => return decide(Effect::Deny, None),
            Err(_) => {}
        }
    }
    decide(*default, None)
}

fn who(claims: Value) -> Identity {
    let Value::Object(claims) = claims else {
        panic!("claims must be an object")
    };
    Identity {
        claims,
        expires_at: None,
    }
}

fn raw(text: &str) -> RawAcl {
    toml::from_str(text).unwrap()
}

fn allow_only(topics: &[&str]) -> RawAcl {
    RawAcl {
        default: "deny".into(),
        rules: vec![RawRule {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            claims: Map::new(),
            effect: "allow".into(),
        }],
    }
}

fn fallbacks(acl: &Acl) -> usize {
    acl.rules
        .iter()
        .filter(|rule| matches!(rule.patterns, Patterns::PerIdentity(_)))
        .count()
}

#[test]
fn templated_rules_share_compiled_parts_across_identities() {
    let acl = Acl::compile(&raw(r#"
        [[rules]]
        topics = ["user.${sub}.*", "lobby"]
        effect = "allow"
    "#))
    .unwrap();
    let Patterns::Templated(shared) = &acl.rules[0].patterns else {
        panic!("a template must be compiled at config load");
    };
    let alice = acl.bind(&who(json!({"sub": "alice"})));
    let bob = acl.bind(&who(json!({"sub": "bob"})));
    for policy in [&alice, &bob] {
        let Globs::Bound { rule, .. } = &*policy.rules[0].1 else {
            panic!("bound, not compiled per identity");
        };
        assert!(Arc::ptr_eq(rule, shared));
    }
    assert!(alice.check("user.alice.x").allowed());
    assert!(!alice.check("user.bob.x").allowed());
    assert!(bob.check("lobby").allowed());
}

#[test]
fn claims_are_looked_up_once_per_bind_for_all_rules() {
    let acl = Acl::compile(&raw(r#"
        [[rules]]
        topics = ["a.${sub}", "b.${org.id}.${sub}"]
        effect = "allow"
        [[rules]]
        topics = ["c.${sub}"]
        effect = "allow"
    "#))
    .unwrap();
    let names: Vec<&str> = acl
        .template_claims
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["sub", "org.id"]);
    let policy = acl.bind(&who(json!({"sub": "s", "org": {"id": "o"}})));
    let [(_, first, _), (_, second, _)] = &policy.rules[..] else {
        panic!("both rules apply: {policy:?}");
    };
    let (Globs::Bound { values: a, .. }, Globs::Bound { values: b, .. }) = (&**first, &**second)
    else {
        panic!("both rules are bound");
    };
    assert!(Arc::ptr_eq(a, b));
    assert!(policy.check("b.o.s").allowed());
    assert!(policy.check("c.s").allowed());
}

/// Shapes where globset's reading depends on the raw characters around a
/// `**`, an escape or a brace, each next to a claim: all compile once.
#[test]
fn context_sensitive_shapes_compile_once_and_match_like_the_oracle() {
    let shapes = [
        "${sub}**",
        "**${sub}",
        "**/${sub}",
        "${sub}/**",
        "a/**/${sub}/**/b",
        "\\/**${sub}",
        "${sub}\\/**",
        "{a\\,**}${sub}",
        "{a\\{**/b,${sub}}",
        "{**/${sub},x}",
        "{${sub},**}",
        "{${sub}**,x/**}",
        "{x,**/}${sub}",
        "${sub}{**,/**}",
        "{,${sub}}{,/}**",
        "**/**${sub}",
        "{{${sub},a}/**,b}",
        "\\\\${sub}",
        "\\${sub}${sub}",
        "[]-a]${sub}[!-]",
        "[a-é]${sub}[é-ü]?",
        "${sub},${sub}",
        "*${sub}*${sub}*${sub}*",
        "a/**,${sub}",
        "${sub}/**,x",
    ];
    let values = ["", "a", "/", "**", ",", "}", "a/b", "é", "aa"];
    let topics = [
        "", "a", "aa", "aaa", "/", "//", "a/", "/a", "a/b", "x", "x/", "é", "a/x/a", "a,a", ",",
        "}", "**", "/**", "\\a", "\\/a", "-a-", "éa", "a/a/b", "a//a",
    ];
    for shape in shapes {
        let raw = allow_only(&[shape]);
        let acl = Acl::compile(&raw).unwrap_or_else(|e| panic!("{shape}: {e:?}"));
        assert_eq!(
            fallbacks(&acl),
            0,
            "{shape} fell back to per-identity compile"
        );
        for value in values {
            let identity = who(json!({ "sub": value }));
            let policy = acl.bind(&identity);
            let oracle = oracle_bind(&raw, &identity);
            let built: Vec<String> = values
                .iter()
                .flat_map(|v| [format!("{v}{value}"), format!("{value}/{v}"), v.to_string()])
                .collect();
            for topic in topics
                .iter()
                .copied()
                .chain(built.iter().map(String::as_str))
            {
                assert_eq!(
                    policy.check(topic),
                    oracle_check(&oracle, topic),
                    "{shape} with sub {value:?} on {topic:?}"
                );
            }
        }
    }
}

/// A class matches one byte of the topic, as globset's regex reads it with
/// Unicode off: bytes of multi-byte characters, ranges between them.
#[test]
fn classes_match_bytes_like_globset() {
    let chars = [
        "a", "-", "]", "/", "\\", "\n", "é", "ü", "ÿ", "Ā", "€", "😀", "\u{7f}",
    ];
    let mut topics = vec![String::new()];
    for a in chars {
        topics.push(a.to_string());
        for b in chars {
            topics.push(format!("{a}{b}"));
        }
    }
    let anys = ["", "?", "??", "???"];
    let shapes = CLASSES.iter().flat_map(|class| {
        anys.iter()
            .flat_map(move |before| anys.map(|after| format!("{before}{class}{after}${{sub}}")))
    });
    for shape in shapes {
        let raw = allow_only(&[&shape]);
        let acl = Acl::compile(&raw).unwrap();
        assert_eq!(fallbacks(&acl), 0, "{shape}");
        let identity = who(json!({ "sub": "" }));
        let policy = acl.bind(&identity);
        let oracle = oracle_bind(&raw, &identity);
        for topic in &topics {
            assert_eq!(
                policy.check(topic),
                oracle_check(&oracle, topic),
                "{shape} on {topic:?}"
            );
        }
    }
}

#[test]
fn per_identity_fallback_fills_and_compiles_templates_per_identity() {
    let template = |pattern: &str| Template::parse(pattern).unwrap();
    let acl = Acl {
        default: Effect::Deny,
        rules: vec![Rule {
            patterns: Patterns::PerIdentity(vec![template("user.${sub}.*"), template("lobby")]),
            claims: Vec::new(),
            effect: Effect::Allow,
        }],
        template_claims: Vec::new(),
        warnings: Vec::new(),
    };
    let alice = acl.bind(&who(json!({"sub": "a*"})));
    assert_eq!(alice.check("user.a*.x"), Allow(Some(0)));
    assert_eq!(alice.check("user.ab.x"), Deny(None));
    assert_eq!(alice.check("lobby"), Allow(Some(0)));
    let nobody = acl.bind(&who(json!({})));
    assert_eq!(nobody.check("lobby"), Deny(None));
}

#[test]
fn long_topics_with_many_claim_occurrences_stay_cheap() {
    // Every byte is an occurrence of an empty or one-letter value: matching
    // by trying occurrences would be cubic here; the NFA stays linear.
    let acl = Acl::compile(&allow_only(&["*${sub}*${sub}*${sub}*b"])).unwrap();
    let topic = "a".repeat(64 * 1024);
    for value in ["", "a"] {
        let policy = acl.bind(&who(json!({ "sub": value })));
        assert_eq!(policy.check(&topic), Deny(None), "sub {value:?}");
        assert_eq!(policy.check(&format!("{topic}b")), Allow(Some(0)));
    }
}

// --- The property test -------------------------------------------------

/// A piece of a generated template.
#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Star,
    Any,
    Globstar,
    Comma,
    Escaped(char),
    Class(&'static str),
    Claim(&'static str),
    Alternates(Vec<Vec<Part>>),
}

const CLASSES: &[&str] = &[
    "[ab]",
    "[!a]",
    "[^/]",
    "[a-é]",
    "[]a]",
    "[-a]",
    "[a-]",
    "[!]]",
    "[.-/]",
    "[é-ü]",
    "[\\]",
    "[€-😀]",
    "[*?{]",
    "[!a-z]",
];

/// Claims the templates name: `sub`, a nested one, one that may be a
/// number or boolean, and one the token often lacks.
const CLAIMS: &[&str] = &["sub", "org.id", "n", "gone"];

/// Characters for claim values and topics: every glob meta-character,
/// separators, and multi-byte characters.
const VALUE_CHARS: &[char] = &[
    'a', 'b', '.', '/', '*', '?', '[', ']', '{', '}', ',', '\\', '-', '!', '^', '$', ' ', '\n',
    'é', '€', '😀',
];

fn render(parts: &[Part], out: &mut String) {
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Star => out.push('*'),
            Part::Any => out.push('?'),
            Part::Globstar => out.push_str("**"),
            Part::Comma => out.push(','),
            Part::Escaped(c) => {
                out.push('\\');
                out.push(*c);
            }
            Part::Class(class) => out.push_str(class),
            Part::Claim(name) => {
                out.push_str("${");
                out.push_str(name);
                out.push('}');
            }
            Part::Alternates(alternatives) => {
                out.push('{');
                for (i, alternative) in alternatives.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    render(alternative, out);
                }
                out.push('}');
            }
        }
    }
}

fn part() -> impl Strategy<Value = Part> {
    let leaf = prop_oneof![
        4 => "[ab./é_-]{1,3}".prop_map(Part::Text),
        2 => Just(Part::Text("/".into())),
        2 => Just(Part::Star),
        1 => Just(Part::Any),
        2 => Just(Part::Globstar),
        1 => Just(Part::Comma),
        1 => prop::sample::select(&['*', '?', '[', ']', '{', '}', ',', '\\', '$', '/', '.', 'a'][..])
            .prop_map(Part::Escaped),
        1 => prop::sample::select(CLASSES).prop_map(Part::Class),
        4 => prop::sample::select(CLAIMS).prop_map(Part::Claim),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(prop::collection::vec(inner, 0..4), 1..4).prop_map(Part::Alternates)
    })
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(VALUE_CHARS), 0..5).prop_map(String::from_iter),
        prop::sample::select(&["", "..", "**", "a/**/b", "{a,b}", "\\", "a,b}", "alice"][..])
            .prop_map(str::to_string),
    ]
}

/// The `n` claim: a value that substitutes as text, or one that does not.
fn n_claim() -> impl Strategy<Value = Value> {
    prop_oneof![
        value().prop_map(Value::from),
        Just(json!(42)),
        Just(json!(-1.5)),
        Just(json!(true)),
        Just(json!(null)),
        Just(json!(["a"])),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    /// `(templates, effect, claim condition on n)` per rule.
    rules: Vec<(Vec<Vec<Part>>, bool, bool)>,
    default_allow: bool,
    claims: Value,
    /// Seeds for topics sampled from the templates.
    seeds: Vec<u64>,
    /// Topics glued from claim values and separators.
    glued: Vec<Vec<usize>>,
}

fn case() -> impl Strategy<Value = Case> {
    let template = prop::collection::vec(part(), 0..7);
    let rule = (
        prop::collection::vec(template, 1..3),
        any::<bool>(),
        prop::bool::weighted(0.1),
    );
    (
        prop::collection::vec(rule, 1..4),
        any::<bool>(),
        (
            value(),
            value(),
            n_claim(),
            prop::option::weighted(0.3, value()),
        ),
        prop::collection::vec(any::<u64>(), 12),
        prop::collection::vec(prop::collection::vec(0..12usize, 0..5), 6),
    )
        .prop_map(
            |(rules, default_allow, (sub, org_id, n, gone), seeds, glued)| {
                let mut claims = json!({"sub": sub, "org": {"id": org_id}, "n": n});
                if let Some(gone) = gone {
                    claims["gone"] = json!(gone);
                }
                Case {
                    rules,
                    default_allow,
                    claims,
                    seeds,
                    glued,
                }
            },
        )
}

/// A small deterministic generator for sampling topics from a template.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// A topic the template likely matches: each part replaced by something it
/// matches (claims by their values), with an occasional slip.
fn sample(parts: &[Part], values: &[String], rng: &mut Rng, out: &mut String) {
    let fillers = ["", "a", "/", ".", "é", "b/a", "..", "\n"];
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Star | Part::Globstar => {
                for _ in 0..rng.below(3) {
                    out.push_str(fillers[rng.below(fillers.len())]);
                }
                if rng.below(4) == 0 {
                    out.push_str(&values[rng.below(values.len())]);
                }
            }
            Part::Any => out.push(['a', '/', '.', 'é', '€'][rng.below(5)]),
            Part::Comma => out.push(','),
            Part::Escaped(c) => out.push(*c),
            Part::Class(_) => {
                let chars = ['a', 'b', '-', ']', '/', 'é', 'ü', '€', '😀', 'z', '\\'];
                out.push(chars[rng.below(chars.len())]);
            }
            Part::Claim(name) => {
                let i = CLAIMS.iter().position(|c| c == name).unwrap_or(0);
                out.push_str(&values[i]);
            }
            Part::Alternates(alternatives) => {
                let pick = rng.below(alternatives.len());
                sample(&alternatives[pick], values, rng, out);
            }
        }
        match rng.below(12) {
            0 => out.push('a'),
            1 => {
                out.pop();
            }
            _ => {}
        }
    }
}

/// The claim values as a template would use them, in `CLAIMS` order.
fn claim_texts(claims: &Value) -> Vec<String> {
    let text = |v: &Value| scalar_text(v).unwrap_or_else(|| "zz".into());
    vec![
        text(&claims["sub"]),
        text(&claims["org"]["id"]),
        text(&claims["n"]),
        text(&claims["gone"]),
    ]
}

fn check_case(case: &Case) -> Result<(), TestCaseError> {
    let rules = case
        .rules
        .iter()
        .map(|(templates, allow, condition)| {
            let topics = templates
                .iter()
                .map(|parts| {
                    let mut text = String::new();
                    render(parts, &mut text);
                    text
                })
                .collect();
            let mut claims = Map::new();
            if *condition {
                claims.insert("n".into(), json!(42));
            }
            RawRule {
                topics,
                claims,
                effect: if *allow { "allow" } else { "deny" }.into(),
            }
        })
        .collect();
    let raw = RawAcl {
        default: if case.default_allow { "allow" } else { "deny" }.into(),
        rules,
    };
    let acl = Acl::compile(&raw).map_err(|issues| {
        TestCaseError::fail(format!("generated rules must compile: {issues:?}\n{raw:?}"))
    })?;
    prop_assert_eq!(fallbacks(&acl), 0, "a rule fell back: {:?}", raw);

    let identity = who(case.claims.clone());
    let policy = acl.bind(&identity);
    let oracle = oracle_bind(&raw, &identity);

    let values = claim_texts(&case.claims);
    let mut topics = Vec::new();
    for (i, seed) in case.seeds.iter().enumerate() {
        let (templates, _, _) = &case.rules[i % case.rules.len()];
        let mut topic = String::new();
        let mut rng = Rng(seed | 1);
        sample(
            &templates[i % templates.len()],
            &values,
            &mut rng,
            &mut topic,
        );
        topics.push(topic);
    }
    let halves: Vec<String> = values
        .iter()
        .map(|v| v.chars().take(v.chars().count() / 2).collect())
        .collect();
    let pieces: Vec<&str> = values
        .iter()
        .chain(&halves)
        .map(String::as_str)
        .chain(["", "/", ".", "a", "é", "/**", ","])
        .collect();
    for glue in &case.glued {
        topics.push(glue.iter().map(|&i| pieces[i % pieces.len()]).collect());
    }
    for topic in &topics {
        prop_assert_eq!(
            policy.check(topic),
            oracle_check(&oracle, topic),
            "topic {:?}\nclaims {}\nrules {:?}",
            topic,
            case.claims,
            raw.rules
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn compiled_templates_decide_like_per_identity_compile(case in case()) {
        check_case(&case)?;
    }
}
