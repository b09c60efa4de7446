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
            Self::Wgpu => Ok(burn::tensor::Device::wgpu(Default::default())),
            #[cfg(not(feature = "wgpu"))]
            Self::Wgpu => Err(crate::LoadError::Unsupported(
                "this build has no wgpu support (build with `--features wgpu`)".into(),
            )),
        }
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
    // A GPU packed placement (blocks on the device, multiplied by a wgpu kernel) goes here.
}

impl Placement {
    /// Where a matrix goes on `device` in `dtype`; `packable` says whether it is stored in a
    /// block format the kernels read. Kiln's CPU kernels compute in f32, so they take the CPU in
    /// f32; everything else is burn's.
    pub(crate) fn choose(device: DeviceKind, dtype: DType, packable: bool) -> Self {
        match (device, dtype) {
            (DeviceKind::Cpu, DType::F32) if packable => Self::CpuPacked,
            (DeviceKind::Cpu, DType::F32) => Self::CpuF32,
            _ => Self::Device,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_f32_cpu_keeps_host_matrices() {
        use Placement::*;
        let (cpu, gpu) = (DeviceKind::Cpu, DeviceKind::Wgpu);
        assert_eq!(Placement::choose(cpu, DType::F32, true), CpuPacked);
        assert_eq!(Placement::choose(cpu, DType::F32, false), CpuF32);
        assert_eq!(Placement::choose(cpu, DType::F16, true), Device);
        assert_eq!(Placement::choose(gpu, DType::F32, true), Device);
        assert_eq!(Placement::choose(gpu, DType::F16, false), Device);
    }

    #[test]
    fn names_parse() {
        assert_eq!("gpu".parse::<DeviceKind>(), Ok(DeviceKind::Wgpu));
        assert_eq!("f16".parse::<DType>(), Ok(DType::F16));
        assert!("tpu".parse::<DeviceKind>().is_err());
    }
}
