//! Compiles the wire contract in `proto/` with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["connectors.proto", "importer.proto", "exporter.proto"];
    for f in files {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // File content as `Bytes`: a chunk received is a slice of the gRPC
        // buffer rather than a copy of it.
        .bytes(".plakar.exporter.ExportRequest.chunk")
        .bytes(".importer.OpenResponse.chunk")
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
