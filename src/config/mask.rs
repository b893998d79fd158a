//! Secrets kept out of what the gateway prints: `topicgate check` shows the
//! effective config, and cluster seed URLs appear in config errors.

use super::RawConfig;

impl RawConfig {
    /// The effective config as TOML with every secret replaced by `"***"`.
    pub fn to_masked_toml(&self) -> String {
        let mut masked = self.clone();
        for secret in [
            &mut masked.auth.jwt.secret,
            &mut masked.api.key,
            &mut masked.redis.password,
        ] {
            if !secret.is_empty() {
                *secret = "***".into();
            }
        }
        masked.redis.url = mask_url_password(&masked.redis.url);
        for node in &mut masked.redis.nodes {
            *node = mask_url_password(node);
        }
        match toml::to_string_pretty(&masked) {
            Ok(text) => text,
            Err(err) => format!("# could not render config: {err}\n"),
        }
    }
}

/// `redis://user:pass@host` -> `redis://user:***@host`. A userinfo without
/// `:` may be a bare password and is masked whole. The redis crate also reads
/// a password from the query of socket URLs (`unix:///s.sock?pass=x`), so
/// `pass` and `password` parameters are masked too.
pub(super) fn mask_url_password(url: &str) -> String {
    let masked = mask_userinfo(url);
    let Some((head, query)) = masked.split_once('?') else {
        return masked;
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if name == "pass" || name == "password" => format!("{name}=***"),
            _ => param.to_string(),
        })
        .collect();
    format!("{head}?{}", params.join("&"))
}

fn mask_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => format!("{}***{}", &url[..scheme_end], &rest[at..]),
    }
}
