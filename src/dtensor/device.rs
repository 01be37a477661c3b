//! Where cases run: device selection (`--device auto|cpu|cuda|cuda:N`), loading libtorch's
//! CUDA library, and facts about the libtorch this binary runs against.

use std::ffi::CString;
use std::fmt;
use std::str::FromStr;
use std::sync::Once;

/// The libtorch release this build is made for (tch 0.24 pairs with libtorch 2.11).
pub const EXPECTED_LIBTORCH: &str = "2.11";

/// What the user asked for on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceArg {
    #[default]
    Auto,
    Cpu,
    Cuda(Option<usize>),
}

impl FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceArg::Auto),
            "cpu" => Ok(DeviceArg::Cpu),
            "cuda" => Ok(DeviceArg::Cuda(None)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceArg::Cuda(Some(n))),
                _ => Err(format!("unknown device '{s}' (expected auto, cpu, cuda or cuda:N)")),
            },
        }
    }
}

impl fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceArg::Auto => write!(f, "auto"),
            DeviceArg::Cpu => write!(f, "cpu"),
            DeviceArg::Cuda(None) => write!(f, "cuda"),
            DeviceArg::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

/// A resolved device: what a case's `device` field names (`cpu`, `cuda`, `cuda:N`) and where
/// cases run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Dev {
    #[default]
    Cpu,
    Cuda(usize),
}

impl Dev {
    pub fn tch(self) -> tch::Device {
        match self {
            Dev::Cpu => tch::Device::Cpu,
            Dev::Cuda(n) => {
                init();
                tch::Device::Cuda(n)
            }
        }
    }

    /// The request that resolves to exactly this device.
    pub fn arg(self) -> DeviceArg {
        match self {
            Dev::Cpu => DeviceArg::Cpu,
            Dev::Cuda(n) => DeviceArg::Cuda(Some(n)),
        }
    }
}

impl fmt::Display for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dev::Cpu => write!(f, "cpu"),
            Dev::Cuda(0) => write!(f, "cuda"),
            Dev::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for Dev {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<DeviceArg>() {
            Ok(DeviceArg::Cpu) => Ok(Dev::Cpu),
            Ok(DeviceArg::Cuda(n)) => Ok(Dev::Cuda(n.unwrap_or(0))),
            _ => Err(format!("unknown device '{s}' (expected cpu, cuda or cuda:N)")),
        }
    }
}

names::serde_as_str!(Dev);

/// Resolves a request against the GPUs present. Asking for CUDA where there is none is a
/// usage error, not a silent fallback: a nightly on the wrong device would mislead.
pub fn resolve(arg: DeviceArg) -> Result<Dev, String> {
    init();
    // Only CUDA requests load the CUDA library: a CPU run starts faster without it.
    if arg == DeviceArg::Cpu {
        return Ok(Dev::Cpu);
    }
    let count = cuda_count();
    match arg {
        DeviceArg::Cpu => Ok(Dev::Cpu),
        DeviceArg::Auto => Ok(if count > 0 { Dev::Cuda(0) } else { Dev::Cpu }),
        DeviceArg::Cuda(n) => {
            let n = n.unwrap_or(0);
            if count == 0 {
                Err(format!("--device {arg}: no CUDA device is available (libtorch sees none); use --device cpu"))
            } else if n >= count {
                Err(format!("--device {arg}: only {count} CUDA device(s) present (cuda:0..cuda:{})", count - 1))
            } else {
                Ok(Dev::Cuda(n))
            }
        }
    }
}

/// Number of CUDA devices libtorch can use (0 on CPU-only machines).
pub fn cuda_count() -> usize {
    init();
    if tch::Cuda::is_available() {
        tch::Cuda::device_count().max(0) as usize
    } else {
        0
    }
}

/// Loads `libtorch_cuda.so` once. rustc links with `--as-needed`, which drops the CUDA
/// library because no symbol of it is referenced; without it libtorch sees no GPU.
/// Failure is expected on CPU-only machines and is ignored.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut candidates = Vec::new();
        if let Some(dir) = loaded_libtorch_dir() {
            candidates.push(format!("{dir}/libtorch_cuda.so"));
        }
        candidates.push("libtorch_cuda.so".to_string());
        for c in candidates {
            let name = CString::new(c).expect("no NUL in path");
            // SAFETY: dlopen with a valid C string; the handle is deliberately leaked so the
            // library stays loaded for the life of the process.
            let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if !h.is_null() {
                break;
            }
        }
    });
}

/// Directory of the `libtorch_cpu.so` this process actually loaded (from /proc/self/maps).
pub fn loaded_libtorch_dir() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| {
        let path = l.split_whitespace().nth(5)?;
        let (dir, file) = path.rsplit_once('/')?;
        file.starts_with("libtorch_cpu.so").then(|| dir.to_string())
    })
}

/// Version of the loaded libtorch, read from the `version.py` of the torch package that holds
/// it (`<torch>/lib/libtorch_cpu.so` next to `<torch>/version.py`).
pub fn loaded_libtorch_version() -> Option<String> {
    let dir = loaded_libtorch_dir()?;
    let text = std::fs::read_to_string(format!("{dir}/../version.py")).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("__version__")?;
        let v = rest.split(['\'', '"']).nth(1)?;
        Some(v.to_string())
    })
}

/// Checks that the loaded libtorch is the release this build expects. Returns a message that
/// says what to do when it is not.
pub fn check_libtorch() -> Result<(), String> {
    match loaded_libtorch_version() {
        Some(v) if v == EXPECTED_LIBTORCH || v.starts_with(&format!("{EXPECTED_LIBTORCH}.")) => Ok(()),
        Some(v) => Err(format!(
            "libtorch {v} is loaded from {}, but this build needs {EXPECTED_LIBTORCH}.x (tch 0.24)\n\n\
             Rebuild with scripts/test (it installs torch=={EXPECTED_LIBTORCH}.0 into $SHARDFUZZ_VENV), \
             or unset LD_LIBRARY_PATH if it points at another torch.",
            loaded_libtorch_dir().unwrap_or_default()
        )),
        // A libtorch not from a pip wheel has no version.py: nothing to compare, accept it.
        None => Ok(()),
    }
}

/// Names of the CUDA devices, from the CUDA runtime libtorch loaded, else from nvidia-smi.
pub fn gpu_names() -> Vec<String> {
    let n = cuda_count();
    let mut names = Vec::new();
    type GetProps = unsafe extern "C" fn(*mut u8, i32) -> i32;
    let sym = ["cudaGetDeviceProperties_v2", "cudaGetDeviceProperties"].iter().find_map(|s| {
        let c = CString::new(*s).unwrap();
        // SAFETY: looking up a symbol in the global namespace.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
        (!p.is_null()).then_some(p)
    });
    if let Some(p) = sym {
        // SAFETY: cudaGetDeviceProperties writes a cudaDeviceProp (about 1 KB, name first);
        // the buffer is larger than any released version of the struct.
        let f: GetProps = unsafe { std::mem::transmute(p) };
        for i in 0..n {
            let mut buf = vec![0u8; 16384];
            if unsafe { f(buf.as_mut_ptr(), i as i32) } == 0 {
                let end = buf[..256].iter().position(|&b| b == 0).unwrap_or(256);
                names.push(String::from_utf8_lossy(&buf[..end]).into_owned());
            }
        }
    }
    if names.len() < n {
        if let Ok(out) =
            std::process::Command::new("nvidia-smi").args(["--query-gpu=name", "--format=csv,noheader"]).output()
        {
            names = String::from_utf8_lossy(&out.stdout).lines().map(|s| s.trim().to_string()).collect();
        }
    }
    names
}
