//! The deployment files are checked by the parsers of the real tools: compose-go (which
//! `docker compose config` runs), BuildKit's Dockerfile parser and build checks (`docker build
//! --check`), and Prometheus's rule parser (`promtool check rules`). A broken copy of each is
//! refused, naming the file and the fault.

use std::path::Path;

use owsu_tests::{repo_root, validate_deployment};

const COMPOSE: &str = "infra/deploy/compose.yaml";
const DOCKERFILE: &str = "infra/deploy/Dockerfile";
const RULES: &str = "infra/prometheus/alerts.yml";

#[test]
fn the_compose_file_the_dockerfile_and_the_alert_rules_are_valid() {
    let (ok, out) = validate_deployment(&[
        "-dockerfile",
        DOCKERFILE,
        "-compose",
        COMPOSE,
        "-rules",
        RULES,
    ]);
    assert!(ok, "{out}");
    for line in [
        "infra/deploy/Dockerfile: valid Dockerfile, 5 stages",
        "infra/deploy/compose.yaml: valid compose file, 9 services",
        "infra/prometheus/alerts.yml: valid rule file, 2 groups, 8 rules",
    ] {
        assert!(out.contains(line), "expected {line:?} in:\n{out}");
    }
}

/// A copy of `file` (relative to the repository) under `root`, at the same relative path, with
/// `from` replaced by `to` (which must occur).
fn broken_copy(root: &Path, file: &str, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
    assert!(text.contains(from), "{file} holds {from:?}");
    let path = root.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn broken_deployment_files_are_refused_naming_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    // A key the Compose specification does not have, and a build target the Dockerfile lacks
    // (the copy keeps its place beside its Dockerfile, as in the repository).
    let compose = broken_copy(
        dir.path(),
        COMPOSE,
        "restart: unless-stopped",
        "restarts: unless-stopped",
    );
    let dockerfile = broken_copy(dir.path(), DOCKERFILE, "", "");
    let (ok, out) = validate_deployment(&["-dockerfile", &dockerfile, "-compose", &compose]);
    assert!(
        !ok && out.contains("restarts"),
        "the unknown key is named: {out}"
    );

    let other = tempfile::tempdir().unwrap();
    let compose = broken_copy(other.path(), COMPOSE, "target: jobs}", "target: job}");
    let dockerfile = broken_copy(other.path(), DOCKERFILE, "", "");
    let (ok, out) = validate_deployment(&["-dockerfile", &dockerfile, "-compose", &compose]);
    assert!(
        !ok && out.contains("service jobs builds target \"job\""),
        "the missing stage is named: {out}"
    );

    let dockerfile = broken_copy(
        dir.path(),
        DOCKERFILE,
        "FROM base AS producer",
        "FROM base as producer",
    );
    let (ok, out) = validate_deployment(&["-dockerfile", &dockerfile]);
    assert!(
        !ok && out.contains("line 24: FromAsCasing"),
        "the build check names the line and rule: {out}"
    );

    let rules = broken_copy(
        dir.path(),
        RULES,
        "max(owsu_store_unavailable) == 1",
        "max(owsu_store_unavailable) ==",
    );
    let (ok, out) = validate_deployment(&["-rules", &rules]);
    assert!(
        !ok && out.contains("OwsuStoreUnavailable") && out.contains("parse error"),
        "the rule at fault is named: {out}"
    );
}
