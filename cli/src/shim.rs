//! The shim library built into this binary (by `build.rs`): `vrift run` writes it out when no
//! `libvrift_shim.so` is installed beside the binary, so `vrift` alone is a working install.
pub static EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libvrift_shim.so"));
