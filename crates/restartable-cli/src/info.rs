//! `rseq info`: this thread's registration, CPU ids, kernel and libc, as text or JSON.

use std::os::unix::ffi::OsStrExt as _;
use std::process::ExitCode;

use clap::Args;
use restartable::registration::OWN_AREA_VAR;
use restartable::{registration, Registration};
use serde_json::json;

/// Arguments of `rseq info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Print one JSON object instead of text.
    ///
    /// Its keys: registration ("libc", "library" or "unavailable"), reason (a code
    /// such as "enosys", or null), reason_text, feature_size, cpu, mm_cid (null where
    /// unavailable), numa_node, possible_cpus, membarrier_rseq (true or false),
    /// area_offset (bytes from the thread pointer, or null), kernel, libc.
    #[arg(long)]
    json: bool,
}

/// Everything `info` reports, gathered once.
pub struct Facts {
    pub status: restartable::Status,
    pub cpu: u32,
    pub mm_cid: Option<u32>,
    pub numa_node: Option<u32>,
    pub possible_cpus: usize,
    pub kernel: String,
    pub libc: String,
    pub process_owner: Option<restartable::Owner>,
    /// Where the fast paths find this thread's area, if registered: its offset from
    /// the thread pointer, the same in every thread ([`registration::AreaOffset`]),
    /// or `None` where they go through a thread-local.
    pub area_offset: Option<isize>,
}

impl Facts {
    pub fn gather() -> Facts {
        let status = restartable::status();
        let area_offset = status
            .is_registered()
            .then(registration::AreaOffset::get)
            .flatten()
            .map(registration::AreaOffset::bytes);
        Facts {
            status,
            cpu: restartable::current_cpu(),
            mm_cid: restartable::current_mm_cid(),
            numa_node: restartable::current_numa_node(),
            possible_cpus: restartable::possible_cpus(),
            kernel: restartable::sys::kernel_release(),
            libc: restartable::sys::libc_version(),
            process_owner: registration::process_owner(),
            area_offset,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let reason = self.status.reason();
        json!({
            "registration": self.status.registration.code(),
            "reason": reason.map(|r| r.code()),
            "reason_text": reason.map(|r| r.to_string()),
            "feature_size": self.status.feature_size,
            "cpu": self.cpu,
            "mm_cid": self.mm_cid,
            "numa_node": self.numa_node,
            "possible_cpus": self.possible_cpus,
            "membarrier_rseq": self.status.membarrier_rseq,
            "area_offset": self.area_offset,
            "kernel": self.kernel,
            "libc": self.libc,
        })
    }
}

/// Whether [`OWN_AREA_VAR`] (the library's one spelling of the variable's name) asks
/// for the thread-local path.
fn own_area_thread_local() -> bool {
    let name = std::ffi::OsStr::from_bytes(OWN_AREA_VAR.to_bytes());
    std::env::var_os(name).is_some_and(|v| v == "thread-local")
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| String::from("unavailable"), |v| v.to_string())
}

pub fn run(args: &InfoArgs) -> ExitCode {
    let facts = Facts::gather();
    if args.json {
        outln!("{}", facts.to_json());
        return ExitCode::SUCCESS;
    }
    let registration = match facts.status.registration {
        Registration::Registered(restartable::Owner::Libc) => {
            String::from("libc (glibc registered this thread's area; the library reuses it)")
        }
        Registration::Registered(restartable::Owner::Library) => {
            String::from("library (the library registered its own area for this thread)")
        }
        Registration::Unavailable(r) => format!("unavailable: {r}"),
    };
    outln!("registration     {registration}");
    if facts.status.is_registered() {
        let area = match facts.area_offset {
            Some(off) => format!(
                "thread pointer {off:+} in every thread ({})",
                if facts.process_owner == Some(restartable::Owner::Libc) {
                    "glibc's __rseq_offset"
                } else {
                    "the library's own, in static TLS"
                }
            ),
            // This executable's own area is at one offset unless the variable asked
            // for the thread-local path (a shared object's, for comparisons).
            None if own_area_thread_local() => format!(
                "through a thread-local pointer ({}=thread-local: the path of a shared \
                 object's own area)",
                OWN_AREA_VAR.to_string_lossy()
            ),
            None => String::from("through a thread-local pointer (a shared object's own area)"),
        };
        outln!("area             {area}");
    }
    outln!("feature size     {}", facts.status.feature_size);
    outln!("cpu              {}", facts.cpu);
    outln!("mm_cid           {}", opt(facts.mm_cid));
    outln!("numa node        {}", opt(facts.numa_node));
    outln!("possible cpus    {}", facts.possible_cpus);
    outln!(
        "membarrier rseq  {}",
        if facts.status.membarrier_rseq {
            "available"
        } else {
            "unavailable"
        }
    );
    outln!("kernel           {}", facts.kernel);
    outln!("libc             {}", facts.libc);
    if facts.process_owner.is_none() || !facts.status.is_registered() {
        outln!("note             per-CPU containers run on their fallback paths here");
    }
    ExitCode::SUCCESS
}
