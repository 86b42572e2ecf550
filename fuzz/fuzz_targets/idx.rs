//! Fuzzes the IDX reader (raw and gzip): any input gives an array or an error, never a
//! panic, and a decoded array's data is exactly what its header declares.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(arr) = taper_data::idx::parse_idx(data, std::path::Path::new("fuzz-input")) {
        let count: usize = arr.dims.iter().product();
        assert_eq!(arr.data.len(), count * arr.dtype.size());
        let _ = arr.to_tensor(&taper_tensor::Device::Cpu);
    }
});
