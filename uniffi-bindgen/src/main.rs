//! `uniffi-bindgen`: generates the Kotlin, Swift and Python bindings of `mpox-bindings`.
//!
//! Run it from inside the workspace (it calls `cargo metadata`), in library mode:
//! `uniffi-bindgen generate --no-format target/release/libmpoxscreen.so -l kotlin -o DIR`.
//! `scripts/gen-bindings.sh` does this for every language.

fn main() {
    uniffi::uniffi_bindgen_main()
}
