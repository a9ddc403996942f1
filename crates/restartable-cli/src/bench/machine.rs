//! The machine the figures come from, printed with them.

use serde_json::{json, Value};

use super::cpu_readers::{has_flag, vdso_getcpu};

/// What the figures depend on.
pub struct Machine {
    pub cpu_model: String,
    pub cpus_online: usize,
    pub possible_cpus: usize,
    pub hypervisor: bool,
    pub kernel: String,
    pub libc: String,
    pub registration: &'static str,
    pub status: String,
    pub rustc: &'static str,
    pub rdpid: bool,
    pub rdtscp: bool,
    pub vdso_getcpu: bool,
    pub load_start: Option<[f64; 3]>,
    pub load_end: Option<[f64; 3]>,
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| String::from("unknown"))
}

impl Machine {
    pub fn gather() -> Machine {
        let status = restartable::status();
        Machine {
            cpu_model: cpu_model(),
            cpus_online: std::thread::available_parallelism().map_or(1, |n| n.get()),
            possible_cpus: restartable::possible_cpus(),
            hypervisor: has_flag("hypervisor"),
            kernel: restartable::sys::kernel_release(),
            libc: restartable::sys::libc_version(),
            registration: status.registration.code(),
            status: status.to_string(),
            rustc: option_env!("RSEQ_BENCH_RUSTC").unwrap_or("unknown"),
            rdpid: has_flag("rdpid"),
            rdtscp: has_flag("rdtscp"),
            vdso_getcpu: vdso_getcpu().is_ok(),
            load_start: load_average(),
            load_end: None,
        }
    }

    /// The lines printed above the table.
    pub fn describe(&self) -> Vec<String> {
        let load = |l: Option<[f64; 3]>| {
            l.map_or_else(
                || String::from("unknown"),
                |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]),
            )
        };
        vec![
            format!(
                "cpu         {} ({} usable CPUs, {} possible{})",
                self.cpu_model,
                self.cpus_online,
                self.possible_cpus,
                if self.hypervisor {
                    ", virtual machine"
                } else {
                    ""
                }
            ),
            format!("kernel      Linux {}, {}", self.kernel, self.libc),
            format!("rseq        {}", self.status),
            format!(
                "cpu id      rdpid {}, rdtscp {}, vDSO getcpu {}",
                yes(self.rdpid),
                yes(self.rdtscp),
                yes(self.vdso_getcpu)
            ),
            format!("rustc       {}", self.rustc),
            format!(
                "load avg    {} at the start, {} at the end (1, 5, 15 min)",
                load(self.load_start),
                load(self.load_end)
            ),
        ]
    }

    pub fn to_json(&self) -> Value {
        json!({
            "cpu_model": self.cpu_model,
            "cpus_online": self.cpus_online,
            "possible_cpus": self.possible_cpus,
            "virtual_machine": self.hypervisor,
            "kernel": self.kernel,
            "libc": self.libc,
            "registration": self.registration,
            "rseq_status": self.status,
            "rustc": self.rustc,
            "rdpid": self.rdpid,
            "rdtscp": self.rdtscp,
            "vdso_getcpu": self.vdso_getcpu,
            "load_average_start": self.load_start,
            "load_average_end": self.load_end,
        })
    }

    /// Whether other work competed for the CPUs (1-minute load average above half the
    /// CPUs before the benchmark's own threads).
    pub fn busy(&self) -> bool {
        self.load_start
            .is_some_and(|l| l[0] > 0.5 * self.cpus_online as f64)
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
