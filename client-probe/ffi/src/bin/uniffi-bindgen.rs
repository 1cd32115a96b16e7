//! UniFFI's bindings generator at the library's own UniFFI version, so the
//! generated Kotlin, Swift and Python always match the scaffolding.
fn main() {
    uniffi::uniffi_bindgen_main()
}
