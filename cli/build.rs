//! Compiles `proto/etcd/kv.proto` (the slice of etcd's v3 KV API that `meridian bench compare
//! etcd` drives) with `protox`, as the `meridian-proto` crate does its own files, so the build
//! never needs a system `protoc`; only a client is generated.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/etcd/kv.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(fds)?;
    Ok(())
}
