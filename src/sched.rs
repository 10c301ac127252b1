//! How the kernel schedules the node's threads: the policy (`server.cpu_policy`) and the time slice
//! (`server.cpu_slice_us`), set on the main thread before any other starts, so that every thread inherits them
//! (the runtime's workers, the storage engine's, the fsync thread). Linux only: elsewhere anything but the defaults
//! is refused, and the node logs it and serves as it would.

use std::io;

use crate::config::CpuPolicy;

/// Sets the calling thread's scheduling policy.
#[cfg(target_os = "linux")]
pub fn set_policy(policy: CpuPolicy) -> io::Result<()> {
    if policy == CpuPolicy::Normal {
        return Ok(());
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    match unsafe { libc::sched_setscheduler(0, linux::policy(policy), &param) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Sets the calling thread's time slice, keeping `policy`; 0 leaves the kernel's. A node woken by a message then
/// waits at most that long for the thread running on its CPU. Linux 6.12+ takes `sched_setattr`'s `sched_runtime`
/// as a normal or batch thread's slice; older kernels ignore it, which this reads back to report.
#[cfg(target_os = "linux")]
pub fn set_slice(policy: CpuPolicy, slice_us: u64) -> io::Result<()> {
    if slice_us == 0 {
        return Ok(());
    }
    // SAFETY: reads the calling thread's nice value; it cannot fail for the caller itself.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS as _, 0) };
    let attr = linux::SchedAttr {
        size: linux::SchedAttr::SIZE,
        policy: linux::policy(policy) as u32,
        nice, // sched_setattr sets it too: keep the one the node was started with
        runtime_ns: slice_us * 1000,
        ..linux::SchedAttr::default()
    };
    // SAFETY: pid 0 is the calling thread; `attr` is a complete `sched_attr` of the size it states and outlives
    // the call.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const linux::SchedAttr, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Kernels before 6.12 take the call and ignore the slice: read it back to tell.
    if slice_ns(0)? != attr.runtime_ns {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this kernel keeps its own time slice (Linux 6.12+ takes one per thread)",
        ));
    }
    Ok(())
}

/// The time slice of thread `tid` (0: the calling thread) in nanoseconds, as the kernel reports it.
#[cfg(target_os = "linux")]
pub fn slice_ns(tid: libc::pid_t) -> io::Result<u64> {
    let mut attr = linux::SchedAttr::default();
    // SAFETY: `attr` is a writable `sched_attr` of the size passed, and outlives the call.
    let got = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            &mut attr as *mut linux::SchedAttr,
            linux::SchedAttr::SIZE,
            0,
        )
    };
    match got {
        0 => Ok(attr.runtime_ns),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use crate::config::CpuPolicy;

    /// The kernel's `struct sched_attr`, its first version; libc does not define it.
    #[repr(C)]
    #[derive(Default)]
    pub struct SchedAttr {
        pub size: u32,
        pub policy: u32,
        pub flags: u64,
        pub nice: i32,
        pub priority: u32,
        pub runtime_ns: u64,
        pub deadline_ns: u64,
        pub period_ns: u64,
    }

    impl SchedAttr {
        pub const SIZE: u32 = std::mem::size_of::<SchedAttr>() as u32;
    }

    pub fn policy(policy: CpuPolicy) -> libc::c_int {
        match policy {
            CpuPolicy::Normal => libc::SCHED_OTHER,
            CpuPolicy::Batch => libc::SCHED_BATCH,
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn set_policy(policy: CpuPolicy) -> io::Result<()> {
    match policy {
        CpuPolicy::Normal => Ok(()),
        CpuPolicy::Batch => Err(io::Error::new(io::ErrorKind::Unsupported, "SCHED_BATCH is Linux's")),
    }
}

#[cfg(not(target_os = "linux"))]
pub fn set_slice(_policy: CpuPolicy, slice_us: u64) -> io::Result<()> {
    match slice_us {
        0 => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a thread's time slice is Linux's",
        )),
    }
}
