use serde::Deserialize;
use serde_json::json;

use super::globs::glob;
use super::*;
use crate::auth::Identity;
use crate::issues::Issue;
use Decision::{Allow, Deny};

/// `[acl]` from TOML text (the part after the `[acl]` header).
fn acl(text: &str) -> Acl {
    let raw: RawAcl = toml::from_str(text).unwrap();
    Acl::compile(&raw).unwrap_or_else(|issues| panic!("{text}\n{issues:?}"))
}

fn compile_err(text: &str) -> Vec<Issue> {
    let raw: RawAcl = toml::from_str(text).unwrap();
    match Acl::compile(&raw) {
        Ok(acl) => panic!("should be refused: {text}\n{acl:?}"),
        Err(issues) => issues,
    }
}

fn who(claims: Value) -> Identity {
    match claims {
        Value::Object(claims) => Identity {
            claims,
            expires_at: None,
        },
        other => panic!("claims must be an object, got {other}"),
    }
}

/// One rule allowing `topics` (TOML array text), then `default = "deny"`.
fn allow_only(topics: &str) -> Acl {
    acl(&format!(
        "default = \"deny\"\n[[rules]]\ntopics = {topics}\neffect = \"allow\"\n"
    ))
}

/// The example of the README's Policies section, verbatim.
const POLICIES_EXAMPLE: &str = r#"
[acl]
default = "deny"

[[acl.rules]]                 # rule 0: a public prefix, for everyone
topics = ["public.*"]
effect = "allow"

[[acl.rules]]                 # rule 1: admin-only prefix
topics = ["admin.*"]
claims = { roles = "admin" }  # "roles": "admin", or an array containing it
effect = "allow"

[[acl.rules]]                 # rule 2: each user's own channels
topics = ["user.${sub}.{inbox,feed}"]
effect = "allow"
"#;

/// The `[acl]` of a whole config file.
fn file_acl(text: &str) -> Acl {
    #[derive(Deserialize)]
    struct File {
        acl: RawAcl,
    }
    let file: File = toml::from_str(text).unwrap();
    Acl::compile(&file.acl).unwrap()
}

#[test]
fn policies_example_table() {
    let acl = file_acl(POLICIES_EXAMPLE);
    let alice = acl.bind(&who(json!({"sub": "alice", "roles": ["user"]})));
    let bob = acl.bind(&who(json!({"sub": "bob", "roles": ["user", "admin"]})));
    let star = acl.bind(&who(json!({"sub": "*"})));
    // One row per row of the table in the README's Policies section, same order:
    // (topic, alice, bob, sub "*").
    let rows: &[(&str, Decision, Decision, Decision)] = &[
        (
            "public.news",
            Allow(Some(0)),
            Allow(Some(0)),
            Allow(Some(0)),
        ),
        ("user.alice.inbox", Allow(Some(2)), Deny(None), Deny(None)),
        ("user.alice.bob.inbox", Deny(None), Deny(None), Deny(None)),
        ("user.bob.inbox", Deny(None), Allow(Some(2)), Deny(None)),
        ("user.*.inbox", Deny(None), Deny(None), Allow(Some(2))),
        ("user.alice", Deny(None), Deny(None), Deny(None)),
        ("admin.metrics", Deny(None), Allow(Some(1)), Deny(None)),
        ("billing.invoices", Deny(None), Deny(None), Deny(None)),
    ];
    for (topic, a, b, s) in rows {
        assert_eq!(alice.check(topic), *a, "alice, {topic}");
        assert_eq!(bob.check(topic), *b, "bob, {topic}");
        assert_eq!(star.check(topic), *s, "sub *, {topic}");
    }
}

#[test]
fn a_wildcard_after_a_claim_is_warned_about_naming_the_key() {
    let warned = |topics: &str| {
        let acl = acl(&format!(
            "[[rules]]\ntopics = [\"public.*\", {topics}]\neffect = \"allow\"\n"
        ));
        acl.warnings()
            .iter()
            .map(|w| w.key.clone())
            .collect::<Vec<_>>()
    };
    for risky in [
        r#""user.${sub}.*""#,
        r#""user.${sub}*""#,
        r#""user.${sub}.?""#,
        r#""user.${sub}.[a-z]""#,
        r#""user.${sub}.{inbox,*}""#,
    ] {
        assert_eq!(warned(risky), ["acl.rules[0].topics[1]"], "{risky}");
    }
    for safe in [
        r#""user.${sub}.{inbox,feed}""#,
        r#""user.${sub}""#,
        r#""feed.{${sub},common}""#,
        r#""user.${sub}.\\*""#,
        r#""user.*""#,
    ] {
        assert!(warned(safe).is_empty(), "{safe}");
    }
    // A deny rule that reaches further denies more: nothing to warn about.
    let deny = acl("[[rules]]\ntopics = [\"user.${sub}.*\"]\neffect = \"deny\"\n");
    assert!(deny.warnings().is_empty());
}

#[test]
fn policies_example_anonymous_session_gets_only_static_rules() {
    let acl = file_acl(POLICIES_EXAMPLE);
    let anonymous = acl.bind(&Identity::anonymous());
    assert_eq!(anonymous.check("public.news"), Allow(Some(0)));
    assert_eq!(anonymous.check("admin.metrics"), Deny(None));
    assert_eq!(anonymous.check("user..inbox"), Deny(None));
    assert_eq!(anonymous.check("user.alice.inbox"), Deny(None));
}

#[test]
fn first_matching_rule_decides_then_default() {
    let ordered = r#"
        default = "deny"
        [[rules]]
        topics = ["chat.secret", "chat.staff-*"]
        effect = "deny"
        [[rules]]
        topics = ["chat.*"]
        effect = "allow"
        [[rules]]
        topics = ["chat.secret"]
        effect = "allow"
    "#;
    let open = r#"
        default = "allow"
        [[rules]]
        topics = ["internal.*"]
        effect = "deny"
    "#;
    let claims_skip = r#"
        [[rules]]
        topics = ["ops.*"]
        claims = { role = "ops" }
        effect = "allow"
        [[rules]]
        topics = ["ops.*"]
        effect = "deny"
        [[rules]]
        topics = ["*"]
        effect = "allow"
    "#;
    let nobody = json!({});
    let ops = json!({"role": "ops"});
    let cases: &[(&str, &Value, &str, Decision)] = &[
        (ordered, &nobody, "chat.lobby", Allow(Some(1))),
        (ordered, &nobody, "chat.secret", Deny(Some(0))),
        (ordered, &nobody, "chat.staff-room", Deny(Some(0))),
        (ordered, &nobody, "chat", Deny(None)),
        (ordered, &nobody, "other", Deny(None)),
        (open, &nobody, "internal.db", Deny(Some(0))),
        (open, &nobody, "anything", Allow(None)),
        (open, &nobody, "internal", Allow(None)),
        // A rule whose claims do not hold is skipped, not decisive.
        (claims_skip, &nobody, "ops.deploy", Deny(Some(1))),
        (claims_skip, &ops, "ops.deploy", Allow(Some(0))),
        (claims_skip, &nobody, "news", Allow(Some(2))),
        // `acl.default` defaults to deny.
        ("", &ops, "anything", Deny(None)),
    ];
    for (rules, claims, topic, expected) in cases {
        let policy = acl(rules).bind(&who((*claims).clone()));
        assert_eq!(
            policy.check(topic),
            *expected,
            "{topic} with {claims} in {rules}"
        );
    }
}

#[test]
fn claims_conditions_match_by_equality_or_array_membership() {
    // (condition as TOML, token claims, applies)
    let cases: &[(&str, Value, bool)] = &[
        (r#"{ role = "admin" }"#, json!({"role": "admin"}), true),
        (r#"{ role = "admin" }"#, json!({"role": "Admin"}), false),
        (r#"{ role = "admin" }"#, json!({"role": "admin "}), false),
        (
            r#"{ role = "admin" }"#,
            json!({"role": ["user", "admin"]}),
            true,
        ),
        (r#"{ role = "admin" }"#, json!({"role": ["user"]}), false),
        (r#"{ role = "admin" }"#, json!({"role": []}), false),
        (r#"{ role = "admin" }"#, json!({"role": [["admin"]]}), false),
        (
            r#"{ role = "admin" }"#,
            json!({"role": {"admin": true}}),
            false,
        ),
        (r#"{ role = "admin" }"#, json!({"role": null}), false),
        (r#"{ role = "admin" }"#, json!({}), false),
        (r#"{ role = "admin" }"#, json!({"roles": "admin"}), false),
        (r#"{ level = 3 }"#, json!({"level": 3}), true),
        (r#"{ level = 3 }"#, json!({"level": 3.0}), true),
        (r#"{ level = 3 }"#, json!({"level": "3"}), false),
        (r#"{ level = 3 }"#, json!({"level": 4}), false),
        (r#"{ level = 3 }"#, json!({"level": [1, 3]}), true),
        (r#"{ level = 2.5 }"#, json!({"level": 2.5}), true),
        (r#"{ level = -1 }"#, json!({"level": -1}), true),
        (
            r#"{ level = -1 }"#,
            json!({"level": 18446744073709551615u64}),
            false,
        ),
        (r#"{ verified = true }"#, json!({"verified": true}), true),
        (r#"{ verified = true }"#, json!({"verified": "true"}), false),
        (r#"{ verified = true }"#, json!({"verified": 1}), false),
        (r#"{ verified = false }"#, json!({"verified": false}), true),
        (r#"{ verified = false }"#, json!({}), false),
        // Dotted names reach nested claims.
        (
            r#"{ "org.role" = "owner" }"#,
            json!({"org": {"role": "owner"}}),
            true,
        ),
        (
            r#"{ "org.role" = "owner" }"#,
            json!({"org": {"role": ["owner"]}}),
            true,
        ),
        (
            r#"{ "org.role" = "owner" }"#,
            json!({"org": "owner"}),
            false,
        ),
        (
            r#"{ "org.role" = "owner" }"#,
            json!({"org": [{"role": "owner"}]}),
            false,
        ),
        // ...and a top-level claim whose name has dots is found as is.
        (
            r#"{ "https://example.com/roles" = "admin" }"#,
            json!({"https://example.com/roles": ["admin"]}),
            true,
        ),
        (
            r#"{ "org.role" = "owner" }"#,
            json!({"org.role": "owner"}),
            true,
        ),
        // All conditions must hold.
        (
            r#"{ role = "admin", tenant = "acme" }"#,
            json!({"role": "admin", "tenant": "acme"}),
            true,
        ),
        (
            r#"{ role = "admin", tenant = "acme" }"#,
            json!({"role": "admin", "tenant": "other"}),
            false,
        ),
        (
            r#"{ role = "admin", tenant = "acme" }"#,
            json!({"role": "admin"}),
            false,
        ),
    ];
    for (condition, claims, applies) in cases {
        let acl = acl(&format!(
            "[[rules]]\ntopics = [\"t\"]\nclaims = {condition}\neffect = \"allow\"\n"
        ));
        let expected = if *applies { Allow(Some(0)) } else { Deny(None) };
        assert_eq!(
            acl.bind(&who(claims.clone())).check("t"),
            expected,
            "{condition} with {claims}"
        );
    }
}

#[test]
fn templates_fill_in_claim_values() {
    // (topics as TOML, token claims, topic, allowed)
    let cases: &[(&str, Value, &str, bool)] = &[
        (
            r#"["user.${sub}.*"]"#,
            json!({"sub": "alice"}),
            "user.alice.inbox",
            true,
        ),
        (
            r#"["user.${sub}.*"]"#,
            json!({"sub": "alice"}),
            "user.alice.a.b/c",
            true,
        ),
        (
            r#"["user.${sub}.*"]"#,
            json!({"sub": "alice"}),
            "user.alice.",
            true,
        ),
        (
            r#"["user.${sub}.*"]"#,
            json!({"sub": "alice"}),
            "user.alice",
            false,
        ),
        (
            r#"["user.${sub}.*"]"#,
            json!({"sub": "alice"}),
            "user.alicex.inbox",
            false,
        ),
        (
            r#"["user.${sub}.*"]"#,
            json!({"sub": "alice"}),
            "user.bob.inbox",
            false,
        ),
        (
            r#"["user.${sub}.*"]"#,
            json!({"sub": "alice"}),
            "user.ALICE.inbox",
            false,
        ),
        (
            r#"["feed.{${sub},common}"]"#,
            json!({"sub": "alice"}),
            "feed.alice",
            true,
        ),
        (
            r#"["feed.{${sub},common}"]"#,
            json!({"sub": "alice"}),
            "feed.common",
            true,
        ),
        (
            r#"["feed.{${sub},common}"]"#,
            json!({"sub": "alice"}),
            "feed.bob",
            false,
        ),
        (
            r#"["org.${org.id}.*"]"#,
            json!({"org": {"id": "acme"}}),
            "org.acme.x",
            true,
        ),
        (
            r#"["org.${org.id}.*"]"#,
            json!({"org": {"id": "acme"}}),
            "org.other.x",
            false,
        ),
        (
            r#"["t.${tenant}.${sub}"]"#,
            json!({"tenant": "acme", "sub": "alice"}),
            "t.acme.alice",
            true,
        ),
        (
            r#"["t.${tenant}.${sub}"]"#,
            json!({"tenant": "acme", "sub": "alice"}),
            "t.alice.acme",
            false,
        ),
        (r#"["n.${uid}"]"#, json!({"uid": 42}), "n.42", true),
        (r#"["n.${uid}"]"#, json!({"uid": 4.5}), "n.4.5", true),
        (r#"["n.${uid}"]"#, json!({"uid": -7}), "n.-7", true),
        (r#"["b.${beta}"]"#, json!({"beta": true}), "b.true", true),
        (r#"["${sub}"]"#, json!({"sub": "alice"}), "alice", true),
        (r#"["${sub}"]"#, json!({"sub": ""}), "", true),
        (r#"["user.${sub}.*"]"#, json!({"sub": ""}), "user..x", true),
        (
            r#"["user.${sub}.*"]"#,
            json!({"sub": ""}),
            "user.x.y",
            false,
        ),
        // Values that do not substitute: the rule does not match.
        (r#"["user.${sub}.*"]"#, json!({}), "user..x", false),
        (
            r#"["user.${sub}.*"]"#,
            json!({"sub": null}),
            "user.null.x",
            false,
        ),
        (
            r#"["user.${sub}.*"]"#,
            json!({"sub": ["a"]}),
            "user.a.x",
            false,
        ),
        (
            r#"["user.${sub}.*"]"#,
            json!({"sub": ["a"]}),
            "user.[\"a\"].x",
            false,
        ),
        (
            r#"["user.${sub}.*"]"#,
            json!({"sub": {"a": 1}}),
            "user.x.x",
            false,
        ),
        (
            r#"["org.${org.id}.*"]"#,
            json!({"org": "acme"}),
            "org.acme.x",
            false,
        ),
        (
            r#"["org.${org.id}.*"]"#,
            json!({"org.id": "acme"}),
            "org.acme.x",
            true,
        ),
        // A missing claim sinks the whole rule, static globs included.
        (r#"["user.${sub}.*", "lobby"]"#, json!({}), "lobby", false),
        (
            r#"["user.${sub}.*", "lobby"]"#,
            json!({"sub": "a"}),
            "lobby",
            true,
        ),
        (
            r#"["t.${tenant}.${sub}"]"#,
            json!({"sub": "alice"}),
            "t..alice",
            false,
        ),
        // `\$` keeps a dollar literal: no claim is read.
        (r#"["price.\\$x"]"#, json!({}), "price.$x", true),
        (r#"["cost.\\${sub}"]"#, json!({}), "cost.$sub", true),
    ];
    for (topics, claims, topic, allowed) in cases {
        let policy = allow_only(topics).bind(&who(claims.clone()));
        assert_eq!(
            policy.check(topic).allowed(),
            *allowed,
            "{topics} with {claims} on {topic:?}"
        );
    }
}

#[test]
fn deny_rule_naming_a_missing_claim_does_not_match() {
    let acl = acl(r#"
        [[rules]]
        topics = ["room.${banned_from}"]
        effect = "deny"
        [[rules]]
        topics = ["room.*"]
        effect = "allow"
    "#);
    let banned = acl.bind(&who(json!({"banned_from": "lobby"})));
    assert_eq!(banned.check("room.lobby"), Deny(Some(0)));
    assert_eq!(banned.check("room.other"), Allow(Some(1)));
    let free = acl.bind(&who(json!({})));
    assert_eq!(free.check("room.lobby"), Allow(Some(1)));
}

#[test]
fn globs_follow_globset_syntax_and_star_crosses_dots_and_slashes() {
    // (topics as TOML, topic, allowed)
    let cases: &[(&str, &str, bool)] = &[
        (r#"["public-*"]"#, "public-news", true),
        (r#"["public-*"]"#, "public-", true),
        (r#"["public-*"]"#, "public-a.b.c", true),
        (r#"["public-*"]"#, "public-a/b/c", true),
        (r#"["public-*"]"#, "public", false),
        (r#"["public-*"]"#, "xpublic-a", false),
        (r#"["*"]"#, "", true),
        (r#"["*"]"#, "a.b/c", true),
        (r#"["a.*.c"]"#, "a.b.b.c", true),
        (r#"["a.*.c"]"#, "a.b/b.c", true),
        (r#"["a/**"]"#, "a/b/c", true),
        (r#"["a/**"]"#, "ab", false),
        (r#"["**/c"]"#, "a/b/c", true),
        (r#"["room-?"]"#, "room-1", true),
        (r#"["room-?"]"#, "room-.", true),
        (r#"["room-?"]"#, "room-/", true),
        (r#"["room-?"]"#, "room-12", false),
        (r#"["room-?"]"#, "room-", false),
        // `?` is one byte: a non-ASCII character takes several.
        (r#"["room-?"]"#, "room-ü", false),
        (r#"["room-??"]"#, "room-ü", true),
        (r#"["room-[ab]"]"#, "room-a", true),
        (r#"["room-[ab]"]"#, "room-c", false),
        (r#"["room-[!ab]"]"#, "room-c", true),
        (r#"["room-[!ab]"]"#, "room-a", false),
        (r#"["room-[a-c]"]"#, "room-b", true),
        (r#"["room-{x,y}"]"#, "room-y", true),
        (r#"["room-{x,y}"]"#, "room-z", false),
        (r#"["room{,-x}"]"#, "room", true),
        (r#"["room{,-x}"]"#, "room-x", true),
        (r#"["room{,-x}"]"#, "room-", false),
        (r#"["room-\\*"]"#, "room-*", true),
        (r#"["room-\\*"]"#, "room-x", false),
        (r#"["Room"]"#, "room", false),
        (r#"["a", "b"]"#, "b", true),
    ];
    for (topics, topic, allowed) in cases {
        let policy = allow_only(topics).bind(&Identity::anonymous());
        assert_eq!(
            policy.check(topic).allowed(),
            *allowed,
            "{topics} on {topic:?}"
        );
    }
}

/// Claim values chosen to break out of a glob: every meta-character alone
/// and in combination, separators, escapes, and template syntax itself.
const NASTY: &[&str] = &[
    "*", "**", "?", "a,b}", "{a,b}", "[x]", "[!x]", "[a-z]", "\\", "a\\", "\\*", "\\\\*", "..",
    ".", "/", "/**", "**/", "a/**/b", ",", "{", "}", "}{", "]", "[", "-", "!", "^", "$", "${sub}",
    "{,}", "a b", "é*", "", "alice", "bob",
];

/// Templates with the literal meaning each must keep for every value `v`:
/// exactly the topics the template's own glob allows with `v` written in
/// plain. Several put `**`, `,` or `{` right next to the value, where
/// globset looks at raw neighbouring characters.
type Meaning = fn(&str, &str) -> bool;
const SHAPES: &[(&str, Meaning)] = &[
    ("user.${sub}.*", |v, t| {
        t.strip_prefix("user.")
            .and_then(|r| r.strip_prefix(v))
            .is_some_and(|r| r.starts_with('.'))
    }),
    ("feed.{${sub},common}", |v, t| {
        t == "feed.common" || t.strip_prefix("feed.") == Some(v)
    }),
    ("room.{lobby,${sub}}", |v, t| {
        t == "room.lobby" || t.strip_prefix("room.") == Some(v)
    }),
    ("${sub}", |v, t| t == v),
    ("${sub}.${sub}", |v, t| t == format!("{v}.{v}")),
    ("${sub}*", |v, t| t.starts_with(v)),
    ("${sub}**", |v, t| t.starts_with(v)),
    ("**${sub}", |v, t| t.ends_with(v)),
    ("{${sub}**,x}", |v, t| t == "x" || t.starts_with(v)),
    ("{x,**${sub}}", |v, t| t == "x" || t.ends_with(v)),
    ("{x,${sub}*}", |v, t| t == "x" || t.starts_with(v)),
    ("a/${sub}/**", |v, t| {
        t.strip_prefix("a/")
            .and_then(|r| r.strip_prefix(v))
            .is_some_and(|r| r.starts_with('/'))
    }),
    ("a/**/${sub}", |v, t| {
        t.strip_prefix("a/") == Some(v)
            || (t.len() > 2 + v.len() && t.starts_with("a/") && t.ends_with(&format!("/{v}")))
    }),
    ("${sub}?", |v, t| {
        t.strip_prefix(v).is_some_and(|r| r.len() == 1)
    }),
    ("[ab]${sub}", |v, t| {
        t.strip_prefix('a').or_else(|| t.strip_prefix('b')) == Some(v)
    }),
];

/// Topics to probe: what each shape would allow for every value, what an
/// attacker would want, and near misses.
fn probes() -> Vec<String> {
    let mut topics: Vec<String> = [
        "",
        "x",
        "y",
        "admin",
        "feed.common",
        "room.lobby",
        "user.bob.x",
        "user.alice.x",
        "user..x",
        "user...x",
        "user.x",
        "a/b",
        "a/x/bob",
        "a//",
        "a",
        "b",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    for v in NASTY {
        for topic in [
            v.to_string(),
            format!("{v}{v}"),
            format!("user.{v}.x"),
            format!("user.{v}."),
            format!("user.{v}"),
            format!("user.{v}x.y"),
            format!("feed.{v}"),
            format!("room.{v}"),
            format!("{v}x"),
            format!("x{v}"),
            format!("{v}.{v}"),
            format!("{v}."),
            format!("a/{v}/x"),
            format!("a/{v}/"),
            format!("a/x/{v}"),
            format!("a/{v}"),
            format!("a{v}"),
            format!("b{v}"),
            format!("c{v}"),
        ] {
            topics.push(topic);
        }
    }
    topics.sort();
    topics.dedup();
    topics
}

#[test]
fn claim_values_cannot_widen_a_rule() {
    let topics = probes();
    for (template, meaning) in SHAPES {
        let acl = allow_only(&format!("[{template:?}]"));
        for value in NASTY {
            let policy = acl.bind(&who(json!({"sub": value})));
            for topic in &topics {
                assert_eq!(
                    policy.check(topic).allowed(),
                    meaning(value, topic),
                    "template {template:?}, sub {value:?}, topic {topic:?}"
                );
            }
        }
    }
}

#[test]
fn escape_attacks_do_not_reach_other_users_channels() {
    let acl = allow_only(r#"["user.${sub}.*", "feed.{${sub},common}"]"#);
    let victims = ["user.alice.inbox", "feed.alice", "feed.bob", "user.bob.x"];
    for sub in [
        "*",
        "**",
        "?",
        "a,b}",
        "{alice,bob}",
        "[ab]*",
        "\\",
        "..",
        "*}",
        "alice,bob",
        "{a,b}",
        "?lice",
        "[a]lice",
        "alic?",
        "\\*",
    ] {
        let policy = acl.bind(&who(json!({"sub": sub})));
        for victim in victims {
            assert!(
                !policy.check(victim).allowed(),
                "sub {sub:?} reached {victim}"
            );
        }
        // The attacker still gets its own, literal channels.
        assert!(
            policy.check(&format!("user.{sub}.inbox")).allowed(),
            "{sub:?}"
        );
        assert!(policy.check(&format!("feed.{sub}")).allowed(), "{sub:?}");
    }
}

#[test]
fn escaped_value_matches_only_itself() {
    // Every string of up to three characters over the meta-characters and
    // a few plain ones, each against every string of up to two, plus near
    // misses of itself.
    let alphabet = [
        '*', '?', '[', ']', '{', '}', ',', '\\', '!', '-', '/', '.', 'a', 'é',
    ];
    let mut short = vec![String::new()];
    let mut all = vec![String::new()];
    let mut layer = vec![String::new()];
    for len in 1..=3 {
        layer = layer
            .iter()
            .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
            .collect();
        if len <= 2 {
            short.extend(layer.iter().cloned());
        }
        all.extend(layer.iter().cloned());
    }
    for value in all.iter().map(String::as_str).chain(NASTY.iter().copied()) {
        let escaped = escape(value);
        let matcher = glob(&escaped)
            .unwrap_or_else(|err| panic!("{value:?} -> {escaped:?}: {err}"))
            .compile_matcher();
        assert!(matcher.is_match(value), "{value:?} -> {escaped:?}");
        let near = [
            format!("{value}a"),
            format!("a{value}"),
            format!("{value}{value}"),
            value.chars().skip(1).collect(),
            value.chars().map(|_| 'a').collect(),
        ];
        for other in short.iter().chain(near.iter()) {
            if other != value {
                assert!(
                    !matcher.is_match(other),
                    "{value:?} -> {escaped:?} also matches {other:?}"
                );
            }
        }
    }
}

#[test]
fn escape_leaves_plain_text_alone() {
    assert_eq!(escape("alice-01.example_com/x"), "alice-01.example_com/x");
    assert_eq!(
        escape("a*b?c[d]e{f}g,h\\"),
        "a\\*b\\?c\\[d\\]e\\{f\\}g\\,h\\\\"
    );
}

#[test]
fn static_rules_are_shared_and_templated_ones_bound_per_identity() {
    let acl = acl(r#"
        [[rules]]
        topics = ["public.*"]
        effect = "allow"
        [[rules]]
        topics = ["user.${sub}.*"]
        effect = "allow"
    "#);
    let Patterns::Static(shared) = &acl.rules[0].patterns else {
        panic!("rule 0 has no template and must be compiled at config time");
    };
    assert!(matches!(acl.rules[1].patterns, Patterns::Templated(_)));
    let alice = acl.bind(&who(json!({"sub": "alice"})));
    let bob = acl.bind(&who(json!({"sub": "bob"})));
    assert!(Arc::ptr_eq(&alice.rules[0].1, shared));
    assert!(Arc::ptr_eq(&bob.rules[0].1, shared));
    assert!(!Arc::ptr_eq(&alice.rules[1].1, &bob.rules[1].1));
    assert!(alice.check("user.alice.x").allowed());
    assert!(!alice.check("user.bob.x").allowed());
    assert!(bob.check("user.bob.x").allowed());
}

#[test]
fn config_errors_name_the_key() {
    // (acl TOML, key, part of the reason)
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"default = "maybe""#,
            "acl.default",
            "unknown effect \"maybe\"",
        ),
        (
            r#"
            [[rules]]
            topics = ["ok"]
            effect = "allow"
            [[rules]]
            topics = ["room-["]
            effect = "allow"
            "#,
            "acl.rules[1].topics[0]",
            "unclosed character class",
        ),
        (
            r#"
            [[rules]]
            topics = ["ok", "room-{a,b"]
            effect = "allow"
            "#,
            "acl.rules[0].topics[1]",
            "unclosed alternate group",
        ),
        (
            r#"
            [[rules]]
            topics = ["a}"]
            effect = "allow"
            "#,
            "acl.rules[0].topics[0]",
            "unopened alternate group",
        ),
        (
            r#"
            [[rules]]
            topics = ["trailing\\"]
            effect = "allow"
            "#,
            "acl.rules[0].topics[0]",
            "dangling",
        ),
        (
            r#"
            [[rules]]
            topics = ["room-[z-a]"]
            effect = "allow"
            "#,
            "acl.rules[0].topics[0]",
            "invalid range",
        ),
        (
            r#"
            [[rules]]
            topics = ["x"]
            effect = "permit"
            "#,
            "acl.rules[0].effect",
            "unknown effect \"permit\"",
        ),
        (
            r#"
            [[rules]]
            topics = []
            effect = "allow"
            "#,
            "acl.rules[0].topics",
            "at least one",
        ),
        (
            r#"
            [[rules]]
            topics = ["user.${sub"]
            effect = "allow"
            "#,
            "acl.rules[0].topics[0]",
            "unterminated ${",
        ),
        (
            r#"
            [[rules]]
            topics = ["user.${}"]
            effect = "allow"
            "#,
            "acl.rules[0].topics[0]",
            "bad claim name",
        ),
        (
            r#"
            [[rules]]
            topics = ["user.${a b}"]
            effect = "allow"
            "#,
            "acl.rules[0].topics[0]",
            "bad claim name",
        ),
        (
            r#"
            [[rules]]
            topics = ["user.${org..id}"]
            effect = "allow"
            "#,
            "acl.rules[0].topics[0]",
            "bad claim name",
        ),
        (
            r#"
            [[rules]]
            topics = ["user.${.id}"]
            effect = "allow"
            "#,
            "acl.rules[0].topics[0]",
            "bad claim name",
        ),
        (
            r#"
            [[rules]]
            topics = ["room-[${sub}]"]
            effect = "allow"
            "#,
            "acl.rules[0].topics[0]",
            "inside a [...] class",
        ),
        (
            r#"
            [[rules]]
            topics = ["room-[]${sub}]"]
            effect = "allow"
            "#,
            "acl.rules[0].topics[0]",
            "inside a [...] class",
        ),
        (
            r#"
            [[rules]]
            topics = ["user.${sub}.{a,b"]
            effect = "allow"
            "#,
            "acl.rules[0].topics[0]",
            "unclosed alternate group",
        ),
        (
            r#"
            [[rules]]
            topics = ["x"]
            claims = { roles = ["admin", "ops"] }
            effect = "allow"
            "#,
            "acl.rules[0].claims.roles",
            "string, number or boolean",
        ),
        (
            r#"
            [[rules]]
            topics = ["x"]
            claims = { org = { role = "owner" } }
            effect = "allow"
            "#,
            "acl.rules[0].claims.org",
            "dotted key",
        ),
        (
            r#"
            [[rules]]
            topics = ["x"]
            claims = { "" = "x" }
            effect = "allow"
            "#,
            "acl.rules[0].claims.",
            "empty",
        ),
    ];
    for (text, key, reason) in cases {
        let issues = compile_err(text);
        assert!(
            issues
                .iter()
                .any(|issue| issue.key == *key && issue.reason.contains(reason)),
            "expected {key}: ...{reason}... for {text}\ngot {issues:?}"
        );
    }
}

#[test]
fn every_acl_problem_is_reported_at_once() {
    let issues = compile_err(
        r#"
        default = "open"
        [[rules]]
        topics = ["a["]
        effect = "allow"
        [[rules]]
        topics = ["${sub"]
        effect = "nope"
    "#,
    );
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "acl.default",
            "acl.rules[0].topics[0]",
            "acl.rules[1].effect",
            "acl.rules[1].topics[0]",
        ]
    );
}

#[test]
fn glob_errors_show_the_pattern_as_written() {
    let issues = compile_err(
        r#"
        [[rules]]
        topics = ["user.${sub}.["]
        effect = "allow"
    "#,
    );
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].reason.contains("\"user.${sub}.[\""), "{issues:?}");
}

#[test]
fn allowed_is_true_only_for_allow() {
    assert!(Allow(None).allowed());
    assert!(Allow(Some(3)).allowed());
    assert!(!Deny(None).allowed());
    assert!(!Deny(Some(0)).allowed());
}

#[test]
fn topics_ending_in_dot_dot_match_like_any_other() {
    // globset's GlobSet treats these as paths and misses them.
    let cases: &[(&str, &str, bool)] = &[
        (r#"["**.."]"#, "..", true),
        (r#"["**.."]"#, "a/..", true),
        (r#"["**.."]"#, "a..", true),
        (r#"["**/.."]"#, "a/..", true),
        (r#"["***."]"#, "a/..", true),
        (r#"["**.."]"#, "a.", false),
    ];
    for (topics, topic, allowed) in cases {
        let policy = allow_only(topics).bind(&Identity::anonymous());
        assert_eq!(
            policy.check(topic).allowed(),
            *allowed,
            "{topics} on {topic:?}"
        );
    }
    let deny = acl(r#"
        default = "allow"
        [[rules]]
        topics = ["**.."]
        effect = "deny"
    "#);
    assert_eq!(
        deny.bind(&Identity::anonymous()).check("x/.."),
        Deny(Some(0))
    );
}
