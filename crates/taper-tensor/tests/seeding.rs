//! Seeding makes parameter initialization reproducible.

use taper_tensor::{manual_seed, rand_uniform, randn, DType, Device, ParamStore, Result};

fn init_model() -> Result<Vec<Vec<f32>>> {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    store.parameter("0.weight", (8, 4), |s, dt, d| {
        rand_uniform(s, -0.5, 0.5, dt, d)
    })?;
    store.parameter("0.bias", 8, |s, dt, d| randn(s, 0.0, 0.1, dt, d))?;
    store
        .state_dict()
        .into_iter()
        .map(|(_, t)| Ok(t.flatten_all()?.to_vec1::<f32>()?))
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_initialization() -> Result<()> {
    manual_seed(1234);
    let a = init_model()?;
    manual_seed(1234);
    let b = init_model()?;
    manual_seed(4321);
    let c = init_model()?;
    assert_eq!(a, b);
    assert_ne!(a, c);
    Ok(())
}
