//! Compiles `proto/**/*.proto` with `protox` (a pure-Rust protobuf compiler), so building
//! Meridian never needs a system `protoc`, then generates prost messages and tonic services.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(root.join("meridian/v1"))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|x| x == "proto"));
    files.sort(); // deterministic generated code
    // The directory too: a new .proto file must rerun this script, not only a changed one.
    println!("cargo:rerun-if-changed={}", root.join("meridian/v1").display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
