//! CPU cost of the storage engines per write, as a replica pays it on a SET:
//! read the stored record, write the new one, and hand the journal to the OS
//! every `--batch` writes.
//!
//! `cargo run --release --example engine_cost -- [--ops N] [--keys K] [--batch B] [--value-size S] [--cache]
//! [--memtable-mb M]`
//!
//! Prints nanoseconds of process CPU (user + system, fjall's background
//! threads included) per write for the disk engine (a write buffer over fjall), the log engine
//! and the memory engine, with the same random keys. A benchmark that prints numbers, not a
//! test: read the two rows of one run side by side.

use std::time::{Duration, Instant};

use clap::Parser;
use rand::Rng;
use ringkv::storage::{storage_key, BatchOp, DiskEngine, Engine, LogEngine, MemoryEngine, Space};

#[derive(Parser)]
struct Args {
    /// Writes per engine.
    #[arg(long, default_value_t = 600_000)]
    ops: usize,
    /// Distinct keys, drawn at random (redis-benchmark's -r).
    #[arg(long, default_value_t = 100_000)]
    keys: u32,
    /// Writes between two flushes of the journal (1 = every write, as unpipelined clients cause).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Bytes per stored value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Read only keys not written before, as a replica does once its record cache holds them.
    #[arg(long)]
    cache: bool,
    /// The disk engine's write buffer: MiB of journal between two ingestions into fjall (the server's default is 64).
    #[arg(long, default_value_t = 64)]
    memtable_mb: u64,
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
    // Linux reports in USER_HZ, 100 on every architecture ringkv builds for.
    Duration::from_millis(ticks * 10)
}

fn run(name: &str, engine: &dyn Engine, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = rand::rng();
    let value = bytes::Bytes::from(vec![b'x'; args.value_size]);
    let (cpu, wall) = (cpu_time(), Instant::now());
    let mut found = 0usize;
    let mut seen = vec![false; args.keys as usize];
    for i in 0..args.ops {
        let index = rng.random_range(0..args.keys);
        let key = format!("key:{index:012}");
        let stored = storage_key(ringkv::cluster::slot::key_slot(key.as_bytes()), 0, key.as_bytes());
        let cached = std::mem::replace(&mut seen[index as usize], true) && args.cache;
        if !cached && engine.get(&stored)?.is_some() {
            found += 1;
        }
        engine.apply(&[BatchOp::Put(Space::Records, stored, value.clone())])?;
        if (i + 1) % args.batch == 0 {
            engine.flush()?;
        }
    }
    engine.flush()?;
    let wall = wall.elapsed();
    // Let background ingestions of full write buffers finish, and count them.
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_time().saturating_sub(cpu);
    let per = |d: Duration| d.as_nanos() / args.ops as u128;
    println!(
        "{name:<7} ops={} found={found} cpu_ns/op={} wall_ns/op={}",
        args.ops,
        per(cpu),
        per(wall)
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    // The server's default block cache: 64 MiB.
    let disk = DiskEngine::open(dir.path(), 64, args.memtable_mb)?;
    run("disk", &disk, &args)?;
    drop(disk);
    let log_dir = tempfile::tempdir()?;
    run("log", &LogEngine::open(log_dir.path())?, &args)?;
    run("memory", &MemoryEngine::default(), &args)?;
    Ok(())
}
