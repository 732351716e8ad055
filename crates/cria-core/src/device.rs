//! The one place the compute backend is chosen: burn's pure-Rust `flex` CPU backend, or — in a
//! build with the `vulkan` feature and `CRIA_DEVICE=vulkan` — burn's Vulkan backend (wgpu over
//! SPIR-V), where the fused CPU kernels give way to their reference compositions.

use burn::tensor::Device;
use std::sync::OnceLock;

/// The environment variable that picks the device: `cpu` (the default) or `vulkan`.
pub const DEVICE_VAR: &str = "CRIA_DEVICE";

/// Which device `CRIA_DEVICE` asks for, or why it cannot be had in this build.
pub fn requested() -> Result<&'static str, String> {
    match std::env::var(DEVICE_VAR).ok().as_deref().map(str::trim) {
        None | Some("") | Some("cpu") => Ok("cpu"),
        Some("vulkan") if cfg!(feature = "vulkan") => Ok("vulkan"),
        Some("vulkan") => Err(format!(
            "{DEVICE_VAR}=vulkan, but this cria was built without the `vulkan` feature: \
             build with `cargo build --release --features vulkan`"
        )),
        Some(other) => Err(format!(
            "{DEVICE_VAR}={other:?} is not a device cria knows: use `cpu` or `vulkan`"
        )),
    }
}

fn chosen() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| match requested() {
        Ok("cpu") => Device::flex(),
        #[cfg(feature = "vulkan")]
        Ok("vulkan") => Device::vulkan(burn::tensor::DeviceKind::default()),
        Ok(other) => unreachable!("requested() offered {other}"),
        Err(e) => panic!("{e}"),
    })
}

/// The device inference runs on (no autodiff bookkeeping).
pub fn inference_device() -> Device {
    chosen().clone()
}

/// The device training runs on: the inference device with autodiff enabled.
pub fn training_device() -> Device {
    chosen().clone().autodiff()
}
