//! Where the model runs and in what precision: the device, the compute dtype, and — per weight
//! matrix — the [`Placement`] that names where it lives and how it is multiplied.

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// burn's `flex` CPU backend (SIMD, rayon), with Kiln's CPU kernels for decode.
    #[default]
    Cpu,
    /// A GPU (or a software Vulkan driver) through wgpu; needs the `wgpu` cargo feature.
    Wgpu,
}

impl std::str::FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            other => Err(format!("unknown device {other:?} (cpu or wgpu)")),
        }
    }
}

impl DeviceKind {
    /// The burn device, or why this build cannot run on it.
    pub(crate) fn burn(self) -> Result<burn::tensor::Device, crate::LoadError> {
        match self {
            Self::Cpu => Ok(burn::tensor::Device::flex()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => gpu::device(),
            #[cfg(not(feature = "wgpu"))]
            Self::Wgpu => Err(crate::LoadError::Unsupported(NO_WGPU.into())),
        }
    }
}

/// A GPU adapter wgpu sees (any graphics API it was built with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuAdapter {
    pub name: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` (a software driver such as Mesa's
    /// lavapipe) or `Other`.
    pub kind: String,
    /// The graphics API: `Vulkan`, `Metal`, `Dx12`, `Gl`.
    pub backend: String,
    pub driver: String,
}

/// The device `--device wgpu` runs on, once started: its adapter's name as the runtime reports
/// it and the memory it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDevice {
    pub name: String,
    /// Bytes of device memory (the largest device-local heap on Vulkan); `None` where the API
    /// does not say.
    pub memory: Option<u64>,
}

/// Every adapter wgpu finds, on every graphics API this build has; empty without the `wgpu`
/// feature or without a driver.
pub fn gpu_adapters() -> Vec<GpuAdapter> {
    #[cfg(feature = "wgpu")]
    return gpu::adapters();
    #[cfg(not(feature = "wgpu"))]
    Vec::new()
}

/// Starts (once per process) the GPU `--device wgpu` runs on and describes it, or says why
/// there is none.
pub fn gpu_device() -> Result<GpuDevice, crate::LoadError> {
    #[cfg(feature = "wgpu")]
    return gpu::device().map(|device| gpu::describe(&device));
    #[cfg(not(feature = "wgpu"))]
    Err(crate::LoadError::Unsupported(NO_WGPU.into()))
}

/// Why a build without the `wgpu` feature cannot run on a GPU.
#[cfg(not(feature = "wgpu"))]
const NO_WGPU: &str = "this build has no wgpu support (build with `--features wgpu`)";

/// wgpu's side: adapters, and the device started once.
#[cfg(feature = "wgpu")]
mod gpu {
    use std::sync::OnceLock;

    use burn::tensor::Device;
    use burn::tensor::wgpu::wgpu;

    use super::{GpuAdapter, GpuDevice};
    use crate::LoadError;

    pub(super) fn adapters() -> Vec<GpuAdapter> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        // Native wgpu answers at once; the future is only for the web.
        ready(instance.enumerate_adapters(wgpu::Backends::all()))
            .unwrap_or_default()
            .iter()
            .map(|adapter| {
                let info = adapter.get_info();
                GpuAdapter {
                    name: info.name,
                    kind: format!("{:?}", info.device_type),
                    backend: format!("{:?}", info.backend),
                    driver: [info.driver, info.driver_info]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(" "),
                }
            })
            .collect()
    }

    /// Polls `f` once: native wgpu's futures are ready when made.
    fn ready<F: Future>(f: F) -> Option<F::Output> {
        use std::task::{Context, Poll, Waker};
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    /// The device, started on the first call (burn's runtime cannot be started twice); every
    /// model of the process shares it.
    pub(super) fn device() -> Result<Device, LoadError> {
        static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
        DEVICE
            .get_or_init(|| {
                if adapters().is_empty() {
                    return Err(
                        "--device wgpu: wgpu finds no GPU adapter (no Vulkan, Metal, DX12 \
                         or GL driver answered; on Linux install the GPU's Vulkan driver, or \
                         Mesa's `mesa-vulkan-drivers` for a software one); `kiln devices` \
                         lists what it sees"
                            .into(),
                    );
                }
                Device::wgpu_options()
                    .init()
                    .map_err(|e| format!("--device wgpu: the GPU could not be started: {e}"))
            })
            .clone()
            .map_err(LoadError::Unsupported)
    }

    pub(super) fn describe(device: &Device) -> GpuDevice {
        let (name, memory) = crate::kernels::gpu::properties(device);
        GpuDevice { name, memory }
    }
}

/// The compute dtype: weights are cast to it once at load (or kept packed, see [`Placement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DType {
    #[default]
    F32,
    F16,
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            other => Err(format!("unknown dtype {other:?} (f32 or f16)")),
        }
    }
}

impl DType {
    pub(crate) fn burn(self) -> burn::tensor::DType {
        match self {
            Self::F32 => burn::tensor::DType::F32,
            Self::F16 => burn::tensor::DType::F16,
        }
    }

    /// Bytes per value.
    pub(crate) fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
        }
    }
}

/// Where one weight matrix lives and how `y = x Wᵀ` is computed with it. Chosen once at load by
/// [`Placement::choose`]; [`crate::nn::Linear`] has one variant per placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// A burn tensor `Wᵀ` (`[in, out]`, contiguous) in the compute dtype on the device; burn's
    /// matmul. Packed formats are dequantized once at load.
    Device,
    /// `W` as f32 rows in burn's CPU tensor: Kiln's kernels read them in place for a few rows of
    /// `x`, burn's matmul takes more.
    CpuF32,
    /// `W` in its GGUF blocks on the host: Kiln's kernels for a few rows of `x`; for more, the
    /// matrix is dequantized for the call into burn's matmul.
    CpuPacked,
    /// `W` in its GGUF blocks on a GPU, multiplied by Kiln's CubeCL kernel for any number of
    /// rows (formats it does not decode are dequantized at load, part by part).
    GpuPacked,
}

impl Placement {
    /// Where a matrix goes on `device` in `dtype`; `packable` says whether it is stored in a
    /// block format the kernels read. Kiln's CPU kernels compute in f32, so they take the CPU in
    /// f32; the GPU kernel reads blocks in either compute dtype; everything else is burn's.
    pub(crate) fn choose(device: DeviceKind, dtype: DType, packable: bool) -> Self {
        match (device, dtype) {
            (DeviceKind::Cpu, DType::F32) if packable => Self::CpuPacked,
            (DeviceKind::Cpu, DType::F32) => Self::CpuF32,
            (DeviceKind::Wgpu, _) if packable => Self::GpuPacked,
            _ => Self::Device,
        }
    }

    /// Whether a matrix so placed is kept in its blocks (read packed from the checkpoint).
    pub(crate) fn keeps_blocks(self) -> bool {
        matches!(self, Self::CpuPacked | Self::GpuPacked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_f32_cpu_keeps_host_matrices_and_gpus_keep_blocks() {
        use Placement::*;
        let (cpu, gpu) = (DeviceKind::Cpu, DeviceKind::Wgpu);
        assert_eq!(Placement::choose(cpu, DType::F32, true), CpuPacked);
        assert_eq!(Placement::choose(cpu, DType::F32, false), CpuF32);
        assert_eq!(Placement::choose(cpu, DType::F16, true), Device);
        assert_eq!(Placement::choose(gpu, DType::F32, true), GpuPacked);
        assert_eq!(Placement::choose(gpu, DType::F16, true), GpuPacked);
        assert_eq!(Placement::choose(gpu, DType::F16, false), Device);
    }

    #[test]
    fn names_parse() {
        assert_eq!("gpu".parse::<DeviceKind>(), Ok(DeviceKind::Wgpu));
        assert_eq!("f16".parse::<DType>(), Ok(DType::F16));
        assert!("tpu".parse::<DeviceKind>().is_err());
    }
}
