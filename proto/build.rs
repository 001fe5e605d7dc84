//! Compiles `nightowl/v1/*.proto` with protox (pure Rust): building needs no `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let protos = [root.join("nightowl/v1/collector.proto"), root.join("nightowl/v1/feed.proto")];
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    let descriptors = protox::compile(&protos, [&root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // A result carries one to a few metrics: a BTreeMap decodes with one node
        // allocation and no hashing, where a HashMap allocated a table and ran SipHash
        // per key (the collector decodes every result of every report).
        .btree_map(".nightowl.v1.CheckResult.metrics")
        .compile_fds(descriptors)?;
    Ok(())
}
