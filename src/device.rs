//! Device choice: `cpu` (the default), `cuda` (GPU 0) or `cuda:N`.
//!
//! CUDA needs a build with the `cuda` feature (`cargo build --release
//! --features cuda`, which needs the CUDA toolkit at build time); asking for
//! it in a CPU-only build is an error that says so.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A device named on the command line or in a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DeviceSpec {
    /// The CPU.
    #[default]
    Cpu,
    /// The CUDA GPU with this ordinal.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    /// Parses `cpu`, `cuda` or `cuda:N`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map(DeviceSpec::Cuda).map_err(|_| {
                    Error::Device(format!("'{s}': the GPU ordinal '{n}' is not a number"))
                }),
                None => Err(Error::Device(format!(
                    "unknown device '{s}' (expected cpu, cuda or cuda:N)"
                ))),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device. CUDA in a build without the `cuda` feature, or a
    /// GPU that cannot be opened, is an error naming the fix.
    pub fn open(&self) -> Result<Device> {
        match *self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => open_cuda(n),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> Result<Device> {
    Device::new_cuda(n).map_err(|e| Error::Device(format!("cannot open cuda:{n}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize) -> Result<Device> {
    Err(Error::Device(format!(
        "cuda:{n} requested, but this build has no CUDA support; rebuild with \
         `cargo build --release --features cuda` (needs the CUDA toolkit), or use --device cpu"
    )))
}

/// Parses and opens a device name in one step (see [`DeviceSpec`]).
pub fn parse_device(name: &str) -> Result<Device> {
    name.parse::<DeviceSpec>()?.open()
}

/// A short name for a device, for logs and result files.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        assert!("cuda:x"
            .parse::<DeviceSpec>()
            .unwrap_err()
            .to_string()
            .contains("'x'"));
        assert!("tpu"
            .parse::<DeviceSpec>()
            .unwrap_err()
            .to_string()
            .contains("unknown device"));
        assert_eq!(device_name(&parse_device("cpu").unwrap()), "cpu");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build() {
        let err = parse_device("cuda:0").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
