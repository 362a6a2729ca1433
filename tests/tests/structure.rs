//! The workspace's shape (issue 14): each process is a role crate (`owsu-producer`,
//! `owsu-aggregator`, `owsu-jobs`) built on the shared layers (`owsu-schemas`, `owsu-runtime`,
//! `owsu-lake`), and no role crate depends on another, nor on the umbrella `owsu`, in any kind
//! of dependency (normal, build or dev): what `cargo tree -p <role>` shows. Read from
//! `cargo metadata`, as cargo itself resolves the manifests.

use std::collections::BTreeMap;

const ROLES: [&str; 3] = ["owsu-producer", "owsu-aggregator", "owsu-jobs"];
const LAYERS: [&str; 3] = ["owsu-schemas", "owsu-runtime", "owsu-lake"];
const UMBRELLA: &str = "owsu";

/// Each workspace crate and the workspace crates it depends on, with the dependency's kind.
fn workspace_dependencies() -> BTreeMap<String, Vec<(String, String)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(owsu_tests::repo_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let members: Vec<&str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| members.contains(&d["name"].as_str().unwrap()))
                .map(|d| {
                    (
                        d["name"].as_str().unwrap().to_owned(),
                        d["kind"].as_str().unwrap_or("normal").to_owned(),
                    )
                })
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

#[test]
fn no_role_crate_depends_on_another_role_crate() {
    let deps = workspace_dependencies();
    for role in ROLES {
        let on = deps
            .get(role)
            .unwrap_or_else(|| panic!("{role} is not in the workspace"));
        let wrong: Vec<_> = on
            .iter()
            .filter(|(name, _)| ROLES.contains(&name.as_str()) || name == UMBRELLA)
            .collect();
        assert!(
            wrong.is_empty(),
            "{role} depends on another role crate: {wrong:?}"
        );
        assert!(
            on.iter().any(|(name, _)| name == "owsu-schemas"),
            "{role} should speak the wire format of owsu-schemas: {on:?}"
        );
    }
}

#[test]
fn the_shared_layers_depend_on_no_role_crate() {
    let deps = workspace_dependencies();
    for layer in LAYERS {
        let on = deps
            .get(layer)
            .unwrap_or_else(|| panic!("{layer} is not in the workspace"));
        let wrong: Vec<_> = on
            .iter()
            .filter(|(name, _)| !LAYERS.contains(&name.as_str()))
            .collect();
        assert!(
            wrong.is_empty(),
            "{layer} depends on a crate above it: {wrong:?}"
        );
    }
}
