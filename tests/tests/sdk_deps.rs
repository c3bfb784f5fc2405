//! The SDK runs on phones in the field with no network, and must never be able to reach one: its
//! dependency tree (as `cargo tree` resolves it from the lock file) holds no networking crate.

use std::process::Command;

use mpox_e2e::workspace_root;

/// Crates that open sockets or speak a network protocol (clients, servers, TLS, async I/O).
const NETWORK_CRATES: &[&str] = &[
    "reqwest",
    "hyper",
    "hyper-util",
    "h2",
    "h3",
    "http",
    "ureq",
    "curl",
    "curl-sys",
    "isahc",
    "attohttpc",
    "surf",
    "tokio",
    "async-std",
    "mio",
    "socket2",
    "quinn",
    "tungstenite",
    "native-tls",
    "openssl",
    "openssl-sys",
    "rustls",
    "webpki",
    "trust-dns-resolver",
    "hickory-resolver",
];

fn sdk_dependencies() -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // `--target all` includes the phones' dependencies, which a host build never downloads: cargo
    // may fetch them from the registry (not `--offline`), but must not change the lock file.
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "tree",
            "-p",
            "mpox-sdk",
            "--edges",
            "normal,build",
            "--target",
            "all",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--locked",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_sdk_depends_on_no_network_crate() {
    let deps = sdk_dependencies();
    // The tree is real: the SDK's own engine, decoder and signature crates are in it.
    for expected in ["mpox-sdk", "tract-onnx", "image", "ed25519-dalek"] {
        assert!(
            deps.iter().any(|d| d == expected),
            "{expected} not in {deps:?}"
        );
    }
    let network: Vec<&String> = deps
        .iter()
        .filter(|d| NETWORK_CRATES.contains(&d.as_str()))
        .collect();
    assert!(
        network.is_empty(),
        "the SDK's dependency tree contains networking crates: {network:?}"
    );
}
