//! The container files (Dockerfile, docker-compose.yml, deploy/nginx.conf)
//! checked against the repository, since no container engine runs here:
//! every file they name exists, the image builds what CI tests, and the
//! ports, config keys and proxy settings agree with each other.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|err| panic!("read {path}: {err}"))
}

/// docker-compose.yml as far as these tests need it. The file keeps to
/// `key: value` lines, nested mappings and `- item` lists (no anchors, no
/// inline comments), which this reads into dotted paths:
/// `services.nginx.image` -> scalar, `services.nginx.ports` -> list.
struct Compose {
    scalars: BTreeMap<String, String>,
    lists: BTreeMap<String, Vec<String>>,
}

impl Compose {
    fn load() -> Self {
        Self::parse(&read("docker-compose.yml"))
    }

    fn parse(text: &str) -> Self {
        let mut scalars = BTreeMap::new();
        let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // (indent, key) of the mappings enclosing the current line.
        let mut stack: Vec<(usize, String)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            assert!(!line.contains('\t'), "line {}: tab", n + 1);
            assert!(
                !trimmed.starts_with("<<") && !trimmed.contains(": &") && !trimmed.contains(": *"),
                "line {}: anchors and merges are outside what this test reads",
                n + 1
            );
            let indent = line.len() - trimmed.len();
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            let parent: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
            let parent = parent.join(".");
            if let Some(item) = trimmed.strip_prefix("- ") {
                lists.entry(parent).or_default().push(unquote(item));
            } else if let Some(key) = trimmed.strip_suffix(':') {
                stack.push((indent, key.to_string()));
            } else {
                let (key, value) = trimmed
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("line {}: not `key: value`: {line}", n + 1));
                let path = if parent.is_empty() {
                    key.to_string()
                } else {
                    format!("{parent}.{key}")
                };
                scalars.insert(path, unquote(value));
            }
        }
        Self { scalars, lists }
    }

    fn scalar(&self, path: &str) -> &str {
        self.scalars
            .get(path)
            .unwrap_or_else(|| panic!("docker-compose.yml has no {path}"))
    }

    fn list(&self, path: &str) -> &[String] {
        self.lists.get(path).map_or(&[], Vec::as_slice)
    }

    /// The top-level names under `services`.
    fn services(&self) -> Vec<String> {
        let names: BTreeSet<&str> = self
            .scalars
            .keys()
            .chain(self.lists.keys())
            .filter_map(|path| path.strip_prefix("services."))
            .filter_map(|rest| rest.split('.').next())
            .collect();
        names.into_iter().map(String::from).collect()
    }
}

fn unquote(value: &str) -> String {
    let value = value.trim();
    match value
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
    {
        Some(inner) => inner.replace("\\\"", "\""),
        None => value.to_string(),
    }
}

const GATEWAYS: [&str; 2] = ["gateway-1", "gateway-2"];

/// The port of `server.bind` in the config the image ships.
fn shipped_port() -> u16 {
    let raw = topicgate::RawConfig::from_toml(&read("config/config.toml"))
        .expect("config/config.toml parses");
    let bind: std::net::SocketAddr = raw.server.bind.parse().expect("server.bind");
    bind.port()
}

/// Dockerfile instructions, with `\` continuations joined.
fn dockerfile() -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

fn dockerignore() -> Vec<String> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

fn ignored(path: &str, patterns: &[String]) -> bool {
    let path = path.trim_start_matches("./");
    // The forms .dockerignore uses: `dir`, `**/dir` and `*.ext`.
    let under = |path: &str, dir: &str| path == dir || path.starts_with(&format!("{dir}/"));
    patterns.iter().any(|pattern| {
        if let Some(dir) = pattern.strip_prefix("**/") {
            let mut rest = Some(path);
            while let Some(p) = rest {
                if under(p, dir) {
                    return true;
                }
                rest = p.split_once('/').map(|(_, tail)| tail);
            }
            false
        } else if let Some(suffix) = pattern.strip_prefix('*') {
            path.ends_with(suffix)
        } else {
            under(path, pattern)
        }
    })
}

#[test]
fn compose_publishes_the_gateways_on_3000_and_5080_and_nginx_on_8080() {
    let compose = Compose::load();
    let port = shipped_port();
    assert_eq!(port, 3000, "config/config.toml binds port 3000");
    assert_eq!(
        compose.list("services.gateway-1.ports"),
        [format!("3000:{port}")]
    );
    assert_eq!(
        compose.list("services.gateway-2.ports"),
        [format!("5080:{port}")]
    );
    assert_eq!(compose.list("services.nginx.ports"), ["8080:8080"]);
    assert!(
        dockerfile().contains(&format!("EXPOSE {port}")),
        "the Dockerfile exposes {port}"
    );
    let nginx = read("deploy/nginx.conf");
    assert!(nginx.contains("listen 8080;"));
    for gateway in GATEWAYS {
        assert!(
            nginx.contains(&format!("server {gateway}:{port};")),
            "nginx upstream has {gateway}:{port}"
        );
    }
}

#[test]
fn every_file_the_deploy_files_reference_exists() {
    let compose = Compose::load();
    let services = compose.services();
    assert_eq!(services, ["gateway-1", "gateway-2", "nginx", "redis"]);
    for service in &services {
        if let Some(context) = compose.scalars.get(&format!("services.{service}.build")) {
            assert!(
                root().join(context).join("Dockerfile").is_file(),
                "{service}: build context {context} has a Dockerfile"
            );
        }
        for volume in compose.list(&format!("services.{service}.volumes")) {
            let source = volume.split(':').next().unwrap_or_default();
            if source.starts_with("./") {
                assert!(root().join(source).exists(), "{service}: {source} exists");
            }
        }
    }
    // Every ${VAR} the compose file reads is documented in .env.example.
    let example = read(".env.example");
    let text = read("docker-compose.yml");
    let mut variables: Vec<&str> = text
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split([':', '}', '?', '-']).next())
        .collect();
    variables.sort();
    variables.dedup();
    assert_eq!(variables, ["JWT_SECRET", "REDIS_PASSWORD"]);
    for variable in variables {
        assert!(
            example
                .lines()
                .any(|l| l.starts_with(&format!("{variable}="))),
            ".env.example sets {variable}"
        );
    }

    // The Dockerfile's COPY sources exist and are in the build context.
    let patterns = dockerignore();
    let mut destinations = Vec::new();
    for instruction in dockerfile() {
        let Some(args) = instruction.strip_prefix("COPY ") else {
            continue;
        };
        if args.starts_with("--from=") {
            continue;
        }
        let args: Vec<&str> = args.split_whitespace().collect();
        let (destination, sources) = args.split_last().expect("COPY has a destination");
        for source in sources {
            assert!(root().join(source).exists(), "COPY source {source} exists");
            assert!(
                !ignored(source, &patterns),
                "COPY source {source} is excluded by .dockerignore"
            );
        }
        destinations.push(destination.to_string());
    }
    assert!(!ignored("Cargo.lock", &patterns));

    // The image runs with the config it copies, and that config compiles.
    let cmd = dockerfile()
        .into_iter()
        .find(|i| i.starts_with("CMD "))
        .expect("a CMD");
    assert_eq!(cmd, r#"CMD ["--config", "/etc/topicgate/config.toml"]"#);
    assert!(
        destinations
            .iter()
            .any(|d| d == "/etc/topicgate/config.toml")
    );
    // The image gets its secret from the environment: the file's own is a
    // placeholder the gateway refuses.
    let env = HashMap::from([(
        "TOPICGATE__AUTH__JWT__SECRET".to_string(),
        "0f6c2b1e9d8a7c5b4e3f2a1d0c9b8a7e".to_string(),
    )]);
    topicgate::load_config(&root().join("config/config.toml"), Some(env))
        .unwrap_or_else(|err| panic!("the shipped config compiles: {err}"));
}

/// Cargo refuses to build at all when a target the manifest declares is
/// missing, so each must reach the image's build context.
#[test]
fn every_target_the_manifest_declares_is_in_the_build_context() {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).expect("Cargo.toml");
    let patterns = dockerignore();
    for (kind, dir) in [
        ("bin", "src/bin"),
        ("bench", "benches"),
        ("example", "examples"),
        ("test", "tests"),
    ] {
        let Some(targets) = manifest.get(kind).and_then(|t| t.as_array()) else {
            continue;
        };
        for target in targets {
            let name = target["name"].as_str().expect("target name");
            let path = match target.get("path").and_then(|p| p.as_str()) {
                Some(path) => path.to_string(),
                None if root().join(format!("{dir}/{name}.rs")).exists() => {
                    format!("{dir}/{name}.rs")
                }
                None => format!("{dir}/{name}/main.rs"),
            };
            assert!(root().join(&path).is_file(), "[[{kind}]] {name}: {path}");
            assert!(
                !ignored(&path, &patterns),
                "[[{kind}]] {name}: {path} is excluded by .dockerignore"
            );
        }
    }
    // Every workspace member's manifest too: Cargo loads them all.
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("workspace members");
    for member in members {
        let path = match member.as_str().expect("member path") {
            "." => "Cargo.toml".to_string(),
            dir => format!("{dir}/Cargo.toml"),
        };
        assert!(root().join(&path).is_file(), "workspace member {path}");
        assert!(
            !ignored(&path, &patterns),
            "workspace member {path} is excluded by .dockerignore"
        );
    }
    assert!(ignored("fuzz/target/x", &patterns) && !ignored("src/main.rs", &patterns));
}

#[test]
fn the_image_builds_with_the_lockfile_ci_tests_with() {
    let instructions = dockerfile();
    assert!(
        instructions
            .iter()
            .any(|i| i == "RUN cargo build --release --locked"),
        "the Dockerfile runs `cargo build --release --locked`"
    );
    let binary = format!("target/release/{}", env!("CARGO_PKG_NAME"));
    assert!(
        instructions
            .iter()
            .any(|i| i.starts_with("COPY --from=builder") && i.contains(&binary)),
        "the runtime stage copies {binary}"
    );
    // CI compiles and tests against the same Cargo.lock.
    let ci = read(".ci/run");
    let builds: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cargo clippy") || l.starts_with("cargo test"))
        .collect();
    assert!(!builds.is_empty());
    for line in builds {
        assert!(line.contains("--locked"), ".ci/run: {line}");
    }
    assert!(root().join("Cargo.lock").is_file());
    // The health check asks the port the shipped config binds.
    let health = instructions
        .iter()
        .find(|i| i.starts_with("HEALTHCHECK"))
        .expect("a HEALTHCHECK");
    assert!(health.contains(&format!("http://127.0.0.1:{}/healthz", shipped_port())));
    assert!(
        instructions.iter().any(|i| i.starts_with("USER 10001")),
        "the gateway runs as a non-root user"
    );
}

#[test]
fn compose_environment_names_real_config_keys() {
    let compose = Compose::load();
    let defaults = toml::Value::try_from(topicgate::RawConfig::default()).unwrap();
    for gateway in GATEWAYS {
        let prefix = format!("services.{gateway}.environment.");
        let env: BTreeMap<&str, &str> = compose
            .scalars
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?, v.as_str())))
            .collect();
        for name in env.keys() {
            let path = name
                .strip_prefix("TOPICGATE__")
                .unwrap_or_else(|| panic!("{gateway}: {name} is not a TOPICGATE__ variable"));
            let found = path
                .split("__")
                .try_fold(&defaults, |table, key| table.get(key.to_lowercase()));
            assert!(found.is_some(), "{gateway}: {name} names no config key");
        }
        // The gateways reach the compose Redis, with the .env password.
        assert_eq!(
            env.get("TOPICGATE__REDIS__URL"),
            Some(&"redis://redis:6379/0")
        );
        assert!(
            env.get("TOPICGATE__REDIS__PASSWORD")
                .is_some_and(|v| v.starts_with("${REDIS_PASSWORD"))
        );
        assert_eq!(
            compose.scalar(&format!("services.{gateway}.depends_on.redis.condition")),
            "service_healthy"
        );
    }
}

#[test]
fn nginx_forwards_websocket_upgrades_without_buffering() {
    let nginx = read("deploy/nginx.conf");
    let directives: Vec<&str> = nginx
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for expected in [
        "proxy_pass http://topicgate;",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "map $http_upgrade $connection_upgrade {",
        "proxy_buffering off;",
    ] {
        assert!(directives.contains(&expected), "nginx.conf: {expected}");
    }
    let raw = topicgate::RawConfig::from_toml(&read("config/config.toml")).unwrap();
    let read_timeout: u64 = directives
        .iter()
        .find_map(|l| l.strip_prefix("proxy_read_timeout "))
        .and_then(|v| v.strip_suffix("s;"))
        .and_then(|v| v.parse().ok())
        .expect("proxy_read_timeout <N>s;");
    assert!(
        read_timeout > raw.server.idle_timeout_secs,
        "proxy_read_timeout {read_timeout}s outlasts server.idle_timeout_secs"
    );
}

#[test]
fn the_compose_reader_reads_what_the_file_uses() {
    let compose = Compose::parse(
        "# c\nservices:\n  a:\n    image: \"x:1\"\n    ports:\n      - \"1:2\"\n    \
         environment:\n      K: \"v \\\"q\\\"\"\n  b:\n    build: .\n",
    );
    assert_eq!(compose.scalar("services.a.image"), "x:1");
    assert_eq!(compose.list("services.a.ports"), ["1:2"]);
    assert_eq!(compose.scalar("services.a.environment.K"), "v \"q\"");
    assert_eq!(compose.scalar("services.b.build"), ".");
    assert_eq!(compose.services(), ["a", "b"]);
}

/// The `location` blocks of deploy/nginx.conf's public server, as
/// (paths it matches, whether it proxies). Reads the forms the file uses:
/// exact (`= /p`), prefix (`/p`, matching any path under it) and regexes
/// `^/(a|b)$` or `^/(a)?$`, expanded to their paths.
fn nginx_locations() -> Vec<(Vec<String>, bool)> {
    let nginx = read("deploy/nginx.conf");
    let lines: Vec<&str> = nginx
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .collect();
    let mut locations = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(pattern) = line
            .strip_prefix("location ")
            .and_then(|l| l.strip_suffix(" {"))
        else {
            continue;
        };
        let block: Vec<&str> = lines[n + 1..]
            .iter()
            .take_while(|l| **l != "}")
            .copied()
            .collect();
        let proxies = block.iter().any(|l| l.starts_with("proxy_pass "));
        let paths = if let Some(exact) = pattern.strip_prefix("= ") {
            vec![exact.to_string()]
        } else if let Some(regex) = pattern.strip_prefix("~ ") {
            let group = regex
                .strip_prefix("^/(")
                .and_then(|r| r.strip_suffix("$"))
                .unwrap_or_else(|| panic!("regex {regex:?} outside what this test reads"));
            let (alternatives, optional) = match group.strip_suffix(")?") {
                Some(alternatives) => (alternatives, true),
                None => (
                    group
                        .strip_suffix(')')
                        .unwrap_or_else(|| panic!("regex {regex:?} outside what this test reads")),
                    false,
                ),
            };
            let mut paths: Vec<String> = alternatives.split('|').map(|a| format!("/{a}")).collect();
            if optional {
                paths.push("/".into());
            }
            paths
        } else {
            vec![format!("{pattern}*")]
        };
        locations.push((paths, proxies));
    }
    locations
}

/// Whether a public nginx location forwards `path` to the gateways.
fn nginx_proxies(path: &str) -> bool {
    let locations = nginx_locations();
    let matches = |pattern: &String| match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    };
    // Exact and regex matches win over a prefix, as in nginx.
    let exact = locations
        .iter()
        .find(|(paths, _)| paths.iter().any(|p| !p.ends_with('*') && matches(p)));
    let prefix = locations
        .iter()
        .filter(|(paths, _)| paths.iter().any(|p| p.ends_with('*') && matches(p)))
        .max_by_key(|(paths, _)| paths.iter().map(String::len).max());
    exact.or(prefix).is_some_and(|(_, proxies)| *proxies)
}

#[test]
fn nginx_exposes_only_the_websocket_and_the_health_checks() {
    for path in ["/", "/ws", "/healthz", "/readyz"] {
        assert!(nginx_proxies(path), "nginx proxies {path}");
    }
    for path in [
        "/metrics",
        "/publish",
        "/console",
        "/console/",
        "/ws/x",
        "/other",
    ] {
        assert!(
            !nginx_proxies(path),
            "nginx keeps {path} off the public listener"
        );
    }
}
