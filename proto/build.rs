//! Compiles the .proto files with `protox` (pure Rust), so no machine needs `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/tokengun/v1/agent.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
