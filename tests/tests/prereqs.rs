//! `scripts/prereqs.sh` finds the libclang that bindgen loads, and only that: a directory holding
//! just clang's C++ library (`libclang-cpp.so.14`, which Debian installs beside unrelated
//! packages) must not pass for it (issue 16: `make demo` then failed after minutes inside
//! librocksdb-sys's build script). The script honours `LIBCLANG_PATH` as bindgen does, so these
//! cases use directories of their own and do not depend on what this machine has installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/prereqs.sh")
}

/// Runs the script with `LIBCLANG_PATH` set to `path`.
fn run(libclang_path: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .env("LIBCLANG_PATH", libclang_path)
        .output()
        .expect("run scripts/prereqs.sh with bash")
}

/// A directory holding empty files with these names.
fn dir_with(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in files {
        std::fs::write(dir.path().join(f), b"").expect("create a stand-in library file");
    }
    dir
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn libclang_cpp_alone_is_not_libclang() {
    let dir = dir_with(&["libclang-cpp.so.14", "libclang-cpp.so", "libLLVM-14.so.1"]);
    let out = run(dir.path(), &["--find-libclang"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("libclang-cpp does not count"), "{}", text(&out));
    // The library file itself named by LIBCLANG_PATH: still not libclang.
    let out = run(&dir.path().join("libclang-cpp.so.14"), &["--find-libclang"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn each_name_bindgen_loads_is_found() {
    for name in ["libclang.so", "libclang.so.1", "libclang-14.so", "libclang-14.so.14"] {
        let dir = dir_with(&["libclang-cpp.so.14", name]);
        let out = run(dir.path(), &["--find-libclang"]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(Path::new(&found), dir.path().join(name), "{name}: {}", text(&out));
    }
}

#[test]
fn the_build_check_refuses_a_libclang_path_without_libclang() {
    // The check `make demo` runs: with LIBCLANG_PATH set bindgen looks only there, so installing
    // a package would not help; the script must fail at once and say what to change.
    let dir = dir_with(&["libclang-cpp.so.14"]);
    let out = run(dir.path(), &["build"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LIBCLANG_PATH") && err.contains("libclang.so"), "{}", text(&out));
    // And passes once the directory holds a real libclang name.
    let dir = dir_with(&["libclang-cpp.so.14", "libclang.so.1"]);
    let out = run(dir.path(), &["--find-libclang"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
