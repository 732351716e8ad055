//! The one place the compute backend is chosen. Today that is burn's pure-Rust `flex` CPU
//! backend; a GPU backend is added here and nowhere else.

use burn::tensor::Device;

/// The device inference runs on (no autodiff bookkeeping).
pub fn inference_device() -> Device {
    Device::flex()
}

/// The device training runs on: the inference device with autodiff enabled.
pub fn training_device() -> Device {
    Device::flex().autodiff()
}
