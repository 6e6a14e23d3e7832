//! `build-offline` takes its Debian mirror from the machine's apt
//! configuration, in both one-line and deb822 formats.

use std::path::Path;
use std::process::Command;

fn mirror_for(files: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("sources.list.d")).expect("mkdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write apt file");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("image/build-offline");
    let out = Command::new("bash")
        .arg(script)
        .arg("--print-mirror")
        .env("DRYDOCK_APT_DIR", dir.path())
        .env("DRYDOCK_DEBIAN_SUITE", "bookworm")
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn deb822_sources_pick_the_suite_with_main_not_security_or_updates() {
    let sources = "\
Types: deb
URIs: http://security.mirror.invalid/debian-security
Suites: bookworm-security
Components: main

# a comment between stanzas
Types: deb deb-src
URIs: http://first.mirror.invalid/debian http://second.mirror.invalid/debian
Suites: bookworm-updates bookworm
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";
    assert_eq!(
        mirror_for(&[("sources.list.d/debian.sources", sources)]),
        "http://first.mirror.invalid/debian"
    );
}

#[test]
fn disabled_and_source_only_stanzas_are_ignored() {
    let sources = "\
Types: deb
URIs: http://disabled.mirror.invalid/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://src.mirror.invalid/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://contrib-only.mirror.invalid/debian
Suites: bookworm
Components: contrib

Types: deb
URIs: http://good.mirror.invalid/debian/
Suites: bookworm
Components: main
";
    assert_eq!(
        mirror_for(&[("sources.list.d/x.sources", sources)]),
        "http://good.mirror.invalid/debian/"
    );
}

#[test]
fn one_line_sources_with_options_and_precedence() {
    let list = "\
# deb http://commented.mirror.invalid/debian bookworm main
deb-src http://src.mirror.invalid/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://one.mirror.invalid/debian bookworm main non-free
";
    // sources.list comes before sources.list.d, as apt reads them.
    let other = "Types: deb\nURIs: http://later.mirror.invalid/debian\nSuites: bookworm\nComponents: main\n";
    assert_eq!(
        mirror_for(&[("sources.list", list), ("sources.list.d/z.sources", other)]),
        "http://one.mirror.invalid/debian"
    );
    assert_eq!(
        mirror_for(&[(
            "sources.list.d/a.list",
            "deb http://a.mirror.invalid/debian bookworm main\n"
        )]),
        "http://a.mirror.invalid/debian"
    );
}

#[test]
fn no_matching_source_gives_nothing() {
    let list = "deb http://old.mirror.invalid/debian bullseye main\n";
    assert_eq!(mirror_for(&[("sources.list", list)]), "");
    assert_eq!(mirror_for(&[]), "");
}
