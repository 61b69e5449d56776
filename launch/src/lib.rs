//! The storm command-line tool as a library shared by its two binaries: `storm` (src/main.rs, the entry
//! point users run, which does not link libtorch) and `storm-core` (src/core.rs, every command).

pub mod allocator;
pub mod cli;
pub mod front;
