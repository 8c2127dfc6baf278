//! `crds/` is generated from the Rust types; these tests fail when it is stale.

use std::path::Path;

#[test]
fn crd_files_match_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let files = jwks_operator::api::crd_files().expect("render CRDs");
    for (name, yaml) in &files {
        let on_disk = std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("crds/{name} is missing ({e}); run `make crds`"));
        assert!(
            on_disk == *yaml,
            "crds/{name} is stale; regenerate with `make crds`"
        );
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = files.iter().map(|(name, _)| name.clone()).collect();
    expected.sort();
    assert_eq!(
        on_disk, expected,
        "crds/ holds files the Rust types do not generate"
    );
}

#[test]
fn crds_command_prints_exactly_the_files_in_crds_dir() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_jwks-operator"))
        .arg("crds")
        .output()
        .expect("run jwks-operator crds");
    assert!(output.status.success());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let concatenated: String = jwks_operator::api::crd_files()
        .expect("render CRDs")
        .iter()
        .map(|(name, _)| std::fs::read_to_string(dir.join(name)).expect("read crd file"))
        .collect();
    assert_eq!(
        String::from_utf8(output.stdout).expect("utf-8"),
        concatenated
    );
}
