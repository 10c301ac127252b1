//! The `ringkv` binary: parse flags, load the config, run a node.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use ringkv::config::{Cli, Config};
use ringkv::sched;
use tracing_subscriber::EnvFilter;

/// Commands allocate small buffers at a high rate; mimalloc does that in a
/// fraction of glibc malloc's instructions and fragments less.
#[global_allocator]
static ALLOCATOR: ringkv::allocator::Allocator = ringkv::allocator::Allocator;

/// `mi_option_purge_delay` in mimalloc.h (the Rust bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before returning it to the OS. Its
/// default of 1 s is shorter than a node's allocation cycles (memtables,
/// request buffers), so memory went back and was faulted in again, zeroing
/// 2 MiB huge pages: 4% of a cluster node's CPU under redis-benchmark SET.
const ALLOCATOR_PURGE_DELAY_MS: std::ffi::c_long = 10_000;

fn main() -> ExitCode {
    // SAFETY: sets a plain integer option; mimalloc reads it on each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS) };
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(e) => {
            say(&e);
            return ExitCode::from(2);
        }
    };
    // A bare level applies to ringkv; the storage engine only speaks up for warnings.
    let level = &config.server.log_level;
    let directives = if level.contains('=') {
        level.clone()
    } else {
        format!("warn,ringkv={level}")
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // Its fallback for a failed write is `eprintln!`, which panics when stderr is gone (a closed pipe): the
        // task that logged would die, even the one that stops the node on SIGTERM. A lost log line is not worth it.
        .log_internal_errors(false)
        .init();
    // A policy or slice the OS refuses costs speed, not correctness: say so and serve.
    if let Err(e) = sched::set_policy(config.server.cpu_policy) {
        tracing::warn!("server.cpu_policy not applied, threads keep the default policy: {e}");
    } else if let Err(e) = sched::set_slice(config.server.cpu_policy, config.server.cpu_slice_us) {
        tracing::warn!("server.cpu_slice_us not applied, threads keep the kernel's time slice: {e}");
    }
    if config.server.disable_thp {
        if let Err(e) = disable_transparent_huge_pages() {
            tracing::warn!("server.disable_thp not applied, huge pages stay as the kernel sets them: {e}");
        }
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.server.threads > 0 {
        runtime.worker_threads(config.server.threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            say(&format_args!("cannot start runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ringkv::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            say(&e);
            ExitCode::FAILURE
        }
    }
}

/// Tells the operator why the node cannot run, on stderr; ignores a stderr that is gone, where `eprintln!` panics.
fn say(message: &dyn std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "ringkv: {message}");
}

/// Turns transparent huge pages off for the whole process (`server.disable_thp`). mimalloc asks for huge pages on
/// its arenas, and the first write to each 2 MiB page faults while the kernel zeroes all of it: a stall every client
/// of the faulting worker waits out while the heap grows. With 4 KiB pages that growth costs microseconds a fault,
/// but lookups in large maps miss the TLB more; compat/PERFORMANCE.md, "Transparent huge pages", has the measured
/// trade.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "PR_SET_THP_DISABLE is Linux's",
    ))
}
