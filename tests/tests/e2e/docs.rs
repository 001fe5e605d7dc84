//! The docs are real. Every fenced TOML block in README.md and docs/*.md is parsed and
//! validated by the loader the binaries use, chosen by the block's info string
//! (`toml agent`, `toml collector`, `toml rules`, `toml policies`; `fragment` after the
//! kind wraps the block into a full document). A block without a known kind fails. Every
//! relative markdown link must point to a file that exists (and to a heading there, when
//! it names one). Nothing is run: no example address is ever contacted, and files a
//! collector block names are created in a scratch directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nightowl_tests::workspace_root;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Agent,
    Collector,
    Rules,
    Policies,
}

/// One ```toml block: where it is, what it is, and its text.
#[derive(Debug, Clone)]
struct Block {
    /// `docs/sinks.md:17` (the opening fence's line).
    at: String,
    kind: Kind,
    fragment: bool,
    text: String,
}

/// What a block parsed into (a test-only value: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Agent(nightowl_agent::config::Config),
    Collector(nightowl_collector::config::Config),
    Rules,
    Policies(nightowl_collector::policy::PolicySet),
}

const KINDS: &str = "```toml agent|collector|rules|policies [fragment]";

/// README.md and every docs/*.md, as (path relative to the workspace, text).
fn markdown_files() -> Vec<(String, String)> {
    let root = workspace_root();
    let mut names = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(root.join(&name)).unwrap();
            (name, text)
        })
        .collect()
}

/// The fenced blocks of a markdown text: (info string, first line number, body).
fn fences(text: &str) -> Vec<(String, usize, String)> {
    let mut found = Vec::new();
    let mut open: Option<(String, usize, String)> = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some((info.trim().to_owned(), index + 1, String::new()));
                }
            }
            Some((_, _, body)) => {
                if trimmed.trim_end() == "```" {
                    found.push(open.take().unwrap());
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "a code fence is never closed");
    found
}

/// Every ```toml block of one file; a block whose kind is missing or unknown is an error.
fn toml_blocks(file: &str, text: &str) -> Vec<Result<Block, String>> {
    fences(text)
        .into_iter()
        .filter(|(info, _, _)| {
            info.split_whitespace().next().is_some_and(|lang| lang.eq_ignore_ascii_case("toml"))
        })
        .map(|(info, line, body)| {
            let at = format!("{file}:{line}");
            let words: Vec<&str> = info.split_whitespace().skip(1).collect();
            let kind = match words.first().copied() {
                Some("agent") => Kind::Agent,
                Some("collector") => Kind::Collector,
                Some("rules") => Kind::Rules,
                Some("policies") => Kind::Policies,
                Some(other) => return Err(format!("{at}: unknown kind {other:?}: use {KINDS}")),
                None => return Err(format!("{at}: a toml block says what it is: use {KINDS}")),
            };
            let fragment = match &words[1..] {
                [] => false,
                ["fragment"] => true,
                other => return Err(format!("{at}: unknown words {other:?} after the kind: use {KINDS}")),
            };
            Ok(Block { at, kind, fragment, text: body })
        })
        .collect()
}

/// The embedded default rules, which a rules fragment (overrides) refers to.
const DEFAULT_RULES: &str = include_str!("../../../collector/src/evaluate/default_rules.toml");

/// A collector block as loaded from `scratch`: every file it names that is read at load
/// (`rules`, `policies`, `*_file`) is created there; absolute paths are moved under it.
fn collector_text_in(block: &Block, scratch: &Path) -> String {
    let mut lines = Vec::new();
    for original in block.text.lines() {
        let mut line = original.to_owned();
        let code = original.split('#').next().unwrap_or("");
        if let Some((key, value)) = code.split_once('=') {
            let key = key.trim();
            let value = value.trim();
            let path = value.strip_prefix('"').and_then(|rest| rest.strip_suffix('"'));
            if let (true, Some(path)) = (key == "rules" || key == "policies" || key.ends_with("_file"), path)
            {
                let at = if let Some(relative) = path.strip_prefix('/') {
                    let moved = scratch.join(relative);
                    line = line.replacen(&format!("\"{path}\""), &format!("\"{}\"", moved.display()), 1);
                    moved
                } else {
                    scratch.join(path)
                };
                std::fs::create_dir_all(at.parent().unwrap()).unwrap();
                let content = match key {
                    "rules" => DEFAULT_RULES,
                    "policies" => "",
                    _ => "example-secret-0123456789abcdef\n",
                };
                std::fs::write(&at, content).unwrap();
            }
        }
        lines.push(line);
    }
    lines.join("\n") + "\n"
}

fn parse(block: &Block) -> Result<Parsed, String> {
    let file = &block.at;
    match (block.kind, block.fragment) {
        (Kind::Agent, false) => nightowl_agent::config::Config::parse(&block.text, file, Path::new("/"))
            .map(Parsed::Agent)
            .map_err(|error| error.to_string()),
        (Kind::Collector, false) => {
            let scratch = tempfile::tempdir().unwrap();
            let text = collector_text_in(block, scratch.path());
            nightowl_collector::config::Config::parse(&text, file, scratch.path())
                .map(Parsed::Collector)
                .map_err(|error| error.to_string())
        }
        (Kind::Rules, fragment) => {
            let text = if fragment { format!("{DEFAULT_RULES}\n{}", block.text) } else { block.text.clone() };
            nightowl_collector::evaluate::RuleSet::parse(&text, file)
                .map(|_| Parsed::Rules)
                .map_err(|error| error.to_string())
        }
        (Kind::Policies, false) => nightowl_collector::policy::PolicySet::parse(&block.text, file)
            .map(Parsed::Policies)
            .map_err(|error| error.to_string()),
        (kind, true) => {
            Err(format!("{file}: no way to complete a {kind:?} fragment: write the whole document"))
        }
    }
}

/// Every problem with the TOML blocks of these files, one line each.
fn toml_problems(files: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, text) in files {
        for block in toml_blocks(name, text) {
            match block {
                Err(problem) => problems.push(problem),
                Ok(block) => {
                    if let Err(problem) = parse(&block) {
                        // The loaders' errors begin with the file name they were given.
                        match problem.starts_with(&block.at) {
                            true => problems.push(problem),
                            false => problems.push(format!("{}: {problem}", block.at)),
                        }
                    }
                }
            }
        }
    }
    problems
}

#[test]
fn every_toml_block_is_valid() {
    let files = markdown_files();
    let count: usize = files.iter().map(|(name, text)| toml_blocks(name, text).len()).sum();
    // README, configuration, rules, policy, delivery and sinks all have examples.
    assert!(count >= 10, "only {count} toml blocks found: is the fence detection broken?");
    let problems = toml_problems(&files);
    assert!(
        problems.is_empty(),
        "{} of {count} toml blocks are broken:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn a_broken_or_unmarked_block_fails() {
    let markdown =
        |info: &str, body: &str| vec![("x.md".to_owned(), format!("text\n\n```{info}\n{body}```\n"))];
    let cases = [
        ("toml", "listen = \"127.0.0.1:7443\"\n", "says what it is"),
        ("toml sink", "[[sink]]\n", "unknown kind \"sink\""),
        ("toml collector", "listen = \"127.0.0.1:7443\"\nbogus = 1\n", "bogus"),
        ("toml collector", "[limits]\nhandshake_timeout = \"soon\"\n", "limits.handshake_timeout"),
        ("toml agent", "[agent]\ninterval = \"never\"\n", "agent.interval"),
        ("toml rules fragment", "[[override]]\nrule = \"no_such_rule\"\nwarn = 1\n", "no_such_rule"),
        ("toml policies", "[[policy]]\nname = \"p\"\n[[policy.command]]\nname = \"x\"\n", "command"),
        ("toml policies fragment", "[[policy]]\nname = \"p\"\n", "fragment"),
        // A secret a sink reads at load must exist: the scratch file is made only for
        // the keys the test knows are files.
        (
            "toml collector",
            "[[sink]]\nname = \"s\"\n[sink.webhook]\nurl = \"https://x.example.net/\"\n",
            "secret",
        ),
    ];
    for (info, body, expected) in cases {
        let problems = toml_problems(&markdown(info, body));
        assert_eq!(problems.len(), 1, "```{info}\n{body}: {problems:?}");
        assert!(problems[0].contains(expected), "```{info}\n{body}: {problems:?} lacks {expected:?}");
        assert!(problems[0].starts_with("x.md:3"), "names the block: {problems:?}");
    }
    // And the same good block passes, so the cases above fail for their reason.
    assert_eq!(
        toml_problems(&markdown("toml collector", "listen = \"127.0.0.1:7443\"\n")),
        Vec::<String>::new()
    );
    // A fence that is not TOML is not checked.
    assert_eq!(toml_problems(&markdown("sh", "bogus = 1\n")), Vec::<String>::new());
}

/// The one block of `file` of this kind whose text contains `needle`, parsed.
fn block(file: &str, kind: Kind, needle: &str) -> (Block, Parsed) {
    let text = std::fs::read_to_string(workspace_root().join(file)).unwrap();
    let mut matching: Vec<Block> = toml_blocks(file, &text)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|block| block.kind == kind && block.text.contains(needle))
        .collect();
    assert_eq!(matching.len(), 1, "{file}: {} {kind:?} blocks contain {needle:?}", matching.len());
    let block = matching.remove(0);
    let parsed = parse(&block).unwrap_or_else(|problem| panic!("{problem}"));
    (block, parsed)
}

fn unit_keys(parsed: &Parsed) -> Vec<String> {
    let Parsed::Agent(config) = parsed else { panic!("not an agent config") };
    config.units.iter().map(|unit| unit.key.clone()).collect()
}

#[test]
fn the_agent_reference_has_every_check_family() {
    let (_, parsed) = block("docs/configuration.md", Kind::Agent, "[[command]]");
    let keys = unit_keys(&parsed);
    for expected in
        ["disk", "host", "service:postgres", "backup:db-nightly", "latency:gateway", "command:root-disk"]
    {
        assert!(keys.contains(&expected.to_owned()), "{expected} missing from {keys:?}");
    }
}

#[test]
fn the_readme_examples_are_what_they_say() {
    let (_, parsed) = block("README.md", Kind::Agent, "[collector]");
    assert_eq!(unit_keys(&parsed), ["disk", "host", "service:postgres", "backup:db-nightly"]);
    let (_, Parsed::Collector(config)) = block("README.md", Kind::Collector, "listen") else { panic!() };
    assert_eq!(config.listen.port(), 7443);
    assert_eq!(config.sinks.len(), 1);
}

#[test]
fn the_collector_reference_is_the_defaults() {
    let (_, Parsed::Collector(config)) = block("docs/configuration.md", Kind::Collector, "[limits]") else {
        panic!()
    };
    assert_eq!(config.offline.after.as_secs(), 25);
    assert_eq!(config.limits, nightowl_collector::config::Limits::default());
    assert!(config.rules_path.is_some() && config.policies_path.is_some());
}

#[test]
fn maintenance_and_coverage_example_is_valid() {
    let (_, Parsed::Collector(config)) = block("docs/rules.md", Kind::Collector, "[[maintenance]]") else {
        panic!()
    };
    assert_eq!(config.maintenance.windows.len(), 1);
    assert!(config.coverage.default.is_some());
}

#[test]
fn the_sink_examples_name_their_sinks() {
    let names = |needle: &str| -> Vec<String> {
        let (_, Parsed::Collector(config)) = block("docs/sinks.md", Kind::Collector, needle) else {
            panic!()
        };
        config.sinks.iter().map(|sink| sink.settings.name.clone()).collect()
    };
    assert_eq!(names("[sink.webhook]"), ["psa", "pager", "alertmanager"]);
    assert_eq!(names("[sink.email]"), ["psa-mail"]);
    assert_eq!(names("[sink.nats]"), ["bus"]);
}

#[test]
fn central_policy_example_is_valid_on_both_sides() {
    let (_, Parsed::Policies(policies)) = block("docs/policy.md", Kind::Policies, "[[policy]]") else {
        panic!()
    };
    let labels = [("role".to_owned(), "server".to_owned())].into_iter().collect();
    let effective = policies.effective("acme", &labels);
    assert_eq!(effective.policies, ["acme-servers"]);
    // What the collector sends, the agent accepts.
    let accepted =
        nightowl_agent::policy::Policy::accept(&effective.message(), std::time::Duration::from_secs(10))
            .unwrap_or_else(|refused| panic!("the agent refuses the docs' policy: {refused}"));
    let keys: Vec<String> = accepted
        .units(std::time::Duration::from_secs(10))
        .unwrap()
        .into_iter()
        .map(|unit| unit.key)
        .collect();
    assert_eq!(keys, ["service:nginx", "backup:db", "latency:gateway"]);
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings (outside code fences), `-1`… for repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || !line.starts_with('#') {
            continue;
        }
        let base = anchor(line.trim_start_matches('#'));
        let mut name = base.clone();
        let mut repeat = 0;
        while seen.contains(&name) {
            repeat += 1;
            name = format!("{base}-{repeat}");
        }
        seen.insert(name);
    }
    seen
}

/// The targets of `[text](target)` links outside code fences and inline code.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_fence = false;
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        // Inline code spans (`…`) are dropped: odd-numbered pieces between backticks.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(start) = rest.find("](") {
            let tail = &rest[start + 2..];
            let Some(end) = tail.find(')') else { break };
            found.push((index + 1, tail[..end].trim().to_owned()));
            rest = &tail[end..];
        }
    }
    found
}

#[test]
fn relative_links_point_to_what_exists() {
    let root = workspace_root();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (name, text) in markdown_files() {
        let dir = root.join(&name).parent().unwrap().to_path_buf();
        for (line, target) in links(&text) {
            if ["http://", "https://", "mailto:"].iter().any(|scheme| target.starts_with(scheme)) {
                continue;
            }
            checked += 1;
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let file: PathBuf = if path.is_empty() { root.join(&name) } else { dir.join(path) };
            if !file.exists() {
                problems.push(format!("{name}:{line}: {target}: {} does not exist", file.display()));
                continue;
            }
            if let Some(fragment) = fragment
                && file.extension().is_some_and(|extension| extension == "md")
                && !anchors(&std::fs::read_to_string(&file).unwrap()).contains(fragment)
            {
                problems
                    .push(format!("{name}:{line}: {target}: no heading #{fragment} in {}", file.display()));
            }
        }
    }
    assert!(checked >= 20, "only {checked} relative links found: is the link detection broken?");
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
}

#[test]
fn a_broken_link_is_found() {
    let text = "see [a](docs/a.md) and [b](b.md#part), `not [c](c.md)`, [d](https://x.example)\n```\n[e](e.md)\n```\n";
    let targets: Vec<String> = links(text).into_iter().map(|(_, target)| target).collect();
    assert_eq!(targets, ["docs/a.md", "b.md#part", "https://x.example"]);
    assert!(
        anchors("# Delivery and the alert feed\n## 2026-12-06: drills\n## Retention\n## Retention\n")
            .is_superset(&BTreeSet::from([
                "delivery-and-the-alert-feed".to_owned(),
                "2026-12-06-drills".to_owned(),
                "retention-1".to_owned(),
            ]))
    );
}
