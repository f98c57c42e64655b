//! Compiles the gRPC contract without a system `protoc` and keeps its descriptor set for
//! server reflection.
use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/backupgw/v1/backupgw.proto"];
    let includes = ["proto"];
    let fds = protox::compile(protos, includes)?;

    // compile_fds() writes no descriptor set (reflection needs one) and no rerun-if-changed.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("backupgw_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // compile_protos() adds this itself; compile_fds() does not.
        .type_attribute(".", "#[allow(clippy::all)]")
        // Same wire format, sent from pre-encoded pages: see src/wire.rs.
        .extern_path(
            ".backupgw.v1.ListBackupsResponse",
            "crate::wire::ListBackupsResponse",
        )
        .compile_fds(fds)?;

    println!("cargo:rerun-if-changed=proto");
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
