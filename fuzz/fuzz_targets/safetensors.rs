//! Fuzzes the safetensors readers behind weights, optimizer state and piece state: any
//! input gives a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let origin = std::path::Path::new("fuzz-input");
    let _ = taper_tensor::parse_safetensors(data, origin);
    let _ = taper_optim::OptimizerState::from_bytes(data, origin);
    let _ = taper_tensor::StateDict::from_bytes(data, origin);
});
