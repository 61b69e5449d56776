//! Puts libtorch on the rpath of every binary and test binary of the package that uses this script,
//! so that `storm` runs without LD_LIBRARY_PATH. tch's own link flags only reach tch's targets.
//! `--no-as-needed -ltorch` keeps libtorch.so (and through it libtorch_cuda.so) in NEEDED; without it
//! CUDA would be silently invisible on a GPU machine.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-L{lib}");
        println!("cargo:rustc-link-arg=-ltorch");
    }
}
