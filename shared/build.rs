//! Puts libtorch on the rpath of every binary and test binary of the package that uses this script,
//! so that `storm` runs without LD_LIBRARY_PATH. tch's own link flags only reach tch's targets.
//! `--no-as-needed -ltorch` keeps libtorch.so (and through it libtorch_cuda.so) in NEEDED; without it
//! CUDA would be silently invisible on a GPU machine. The `storm` front binary gets only the rpath: it runs
//! `storm data …`, which uses no libtorch symbol, so the linker's default `--as-needed` leaves libtorch out.
//!
//! NCCL: the torch wheel ships `nvidia/nccl/lib/libnccl.so.2` beside `torch/lib`, but cudarc opens
//! `libnccl.so` at run time; a `libnccl.so` symlink in OUT_DIR on the rpath lets it find the wheel's copy.
use std::path::Path;

fn link_nccl(torch_lib: &str) {
    let Some(site) = Path::new(torch_lib).parent().and_then(Path::parent) else {
        return;
    };
    let nccl = site.join("nvidia/nccl/lib/libnccl.so.2");
    let Ok(out) = std::env::var("OUT_DIR") else {
        return;
    };
    if !nccl.is_file() {
        return;
    }
    let dir = Path::new(&out).join("nccl");
    let link = dir.join("libnccl.so");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::remove_file(&link);
    if std::os::unix::fs::symlink(&nccl, &link).is_ok() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // the `storm` front binary (storm-launch's src/main.rs) must not load libtorch: only storm-core
        // and the test binaries force it into NEEDED
        let launch = std::env::var("CARGO_PKG_NAME").as_deref() == Ok("storm-launch");
        let kinds: &[&str] = if launch {
            &["-bin=storm-core", "-tests"]
        } else {
            &[""]
        };
        if launch {
            // tch's objects export their C++ template instances, and a symbol libtorch also defines stays
            // live for interposition, dragging libtorch back in: keep archive symbols local in `storm`
            println!("cargo:rustc-link-arg-bin=storm=-Wl,--exclude-libs=ALL");
        }
        for kind in kinds {
            for flag in [
                "-Wl,--no-as-needed".to_string(),
                format!("-L{lib}"),
                "-ltorch".into(),
            ] {
                println!("cargo:rustc-link-arg{kind}={flag}");
            }
        }
        link_nccl(&lib);
    }
}
