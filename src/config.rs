//! Configuration: a TOML file (`conf/ringkv.toml` documents every key) plus
//! command-line flags that override it, validated once at start so that the
//! rest of the server can trust every value.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

/// Why a configuration was refused; printed to the operator at start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file we tried.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML for our schema (unknown keys are refused too).
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file we tried.
        path: PathBuf,
        /// What the parser said, with line and column.
        source: toml::de::Error,
    },
    /// A value is out of its range.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// The setting, as written in the file.
        key: &'static str,
        /// Why it was refused.
        reason: String,
    },
}

/// Which storage engine keeps the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// fjall LSM tree on disk: survives restarts; data may outgrow RAM.
    Disk,
    /// Every record in RAM, every change appended to a log (Redis's
    /// `appendonly yes`): survives restarts; data must fit in RAM.
    Log,
    /// A hash map in RAM: Redis-like speed, nothing survives a restart.
    Memory,
}

impl EngineKind {
    /// Whether what it stores survives a restart.
    pub fn is_durable(self) -> bool {
        self != EngineKind::Memory
    }

    /// The name used in config files and INFO.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Disk => "disk",
            EngineKind::Log => "log",
            EngineKind::Memory => "memory",
        }
    }
}

/// When acknowledged writes reach the disk, mirroring Redis `appendfsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// fsync before the reply is sent (group commit across clients).
    Always,
    /// fsync once a second: a power loss may lose the last second.
    Everysec,
    /// leave it to the OS.
    No,
}

impl FsyncMode {
    /// The name Redis uses for the same `appendfsync` setting.
    pub fn as_str(self) -> &'static str {
        match self {
            FsyncMode::Always => "always",
            FsyncMode::Everysec => "everysec",
            FsyncMode::No => "no",
        }
    }
}

/// The time slices Linux accepts for a thread (`sched_setattr`'s `sched_runtime`, in µs).
pub const CPU_SLICE_US: std::ops::RangeInclusive<u64> = 100..=100_000;

/// How the kernel schedules the node's threads (Linux's scheduling policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CpuPolicy {
    /// `SCHED_OTHER`, the default of every process.
    Normal,
    /// `SCHED_BATCH`: a woken thread waits for the running one's slice
    /// instead of preempting it. For nodes that share cores with each other
    /// and their clients, where each request wakes several processes.
    Batch,
}

/// How a read that finds concurrent values answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ConflictMode {
    /// Return every concurrent value as a RESP array (the client resolves).
    Siblings,
    /// Return the value written last by wall clock; the others stay stored.
    Lww,
}

/// The listener and client-facing limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: IpAddr,
    /// RESP port.
    pub port: u16,
    /// Password for AUTH; empty means no authentication.
    pub requirepass: String,
    /// Connections past this get `-ERR max number of clients reached`.
    pub maxclients: usize,
    /// Memory limit in bytes, 0 for none; past it writes get `-OOM`.
    pub maxmemory: u64,
    /// Close a client idle this many seconds; 0 disables.
    pub timeout: u64,
    /// Number of logical databases for SELECT.
    pub databases: u8,
    /// Largest bulk string a client may send.
    pub proto_max_bulk_len: u64,
    /// Largest number of elements in one request.
    pub max_multibulk_len: u64,
    /// Largest unparsed input buffered for one client.
    pub client_query_buffer_limit: u64,
    /// Tokio worker threads; 0 means one per core.
    pub threads: usize,
    /// Scheduling policy of every thread of the node.
    pub cpu_policy: CpuPolicy,
    /// Longest a thread of the node runs before another runnable one gets the CPU, in µs (Linux 6.12+'s custom
    /// slice); 0 keeps the kernel's.
    pub cpu_slice_us: u64,
    /// Turns transparent huge pages off for the process, like Redis's `disable-thp` (which defaults to yes there).
    pub disable_thp: bool,
    /// Log filter, as `RUST_LOG` (error, warn, info, debug, trace).
    pub log_level: String,
    /// Allows DEBUG (fault injection on the peer bus), like Redis's `enable-debug-command`.
    pub enable_debug_command: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 6379,
            requirepass: String::new(),
            maxclients: 10_000,
            maxmemory: 0,
            timeout: 0,
            databases: 16,
            proto_max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: 1024 * 1024,
            client_query_buffer_limit: 1024 * 1024 * 1024,
            threads: 0,
            cpu_policy: CpuPolicy::Normal,
            cpu_slice_us: 0,
            disable_thp: false,
            log_level: "info".to_string(),
            enable_debug_command: false,
        }
    }
}

/// Where and how records are kept.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Storage engine.
    pub engine: EngineKind,
    /// Directory for data and the node identity.
    pub data_dir: PathBuf,
    /// Durability mode.
    pub fsync: FsyncMode,
    /// Block cache of the disk engine, in MiB.
    pub cache_mb: u64,
    /// Decoded hot records kept in front of the disk engine, in MiB; 0 disables.
    pub record_cache_mb: u64,
    /// MiB the disk engine's write buffer holds before it is sealed and ingested into fjall (or four times as
    /// much journal, when writes rewrite the same keys).
    pub memtable_mb: u64,
    /// How often the active expiry sweep runs, in milliseconds.
    pub expiry_sweep_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            engine: EngineKind::Disk,
            data_dir: PathBuf::from("./data"),
            fsync: FsyncMode::Everysec,
            cache_mb: 64,
            record_cache_mb: 128,
            memtable_mb: 64,
            expiry_sweep_ms: 100,
        }
    }
}

/// One node of a static cluster, as every member's config lists it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// The member's name: its `cluster.node_id`.
    pub id: String,
    /// `host:port` where clients reach its RESP port (CLUSTER SLOTS announces it).
    pub address: String,
    /// `host:port` of its peer bus.
    pub peer: String,
    /// Failure domain; preference lists span distinct zones first. "" = none.
    #[serde(default)]
    pub zone: String,
    /// Tokens on the ring: its weight.
    #[serde(default = "default_vnodes")]
    pub vnodes: u32,
}

fn default_vnodes() -> u32 {
    128
}

/// Versioning and replication settings (a single node is a cluster of one).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name; empty means generate one when the data dir is created.
    pub node_id: String,
    /// How reads answer when a key holds concurrent values.
    pub conflicts: ConflictMode,
    /// How long a delete's tombstone is kept so replicas can learn of it
    /// (ignored by a node without members, which has no replicas to tell).
    pub tombstone_grace_secs: u64,
    /// N: copies of every key.
    pub replicas: usize,
    /// R: replies a read waits for.
    pub read_quorum: usize,
    /// W: acknowledgements a write waits for.
    pub write_quorum: usize,
    /// Shared secret peers prove they know before the bus accepts them.
    pub secret: String,
    /// How long a coordinator waits for a peer, in milliseconds.
    pub request_timeout_ms: u64,
    /// The static member list; empty means a cluster of one (N = R = W = 1).
    pub members: Vec<MemberConfig>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            conflicts: ConflictMode::Siblings,
            tombstone_grace_secs: 86_400,
            replicas: 3,
            read_quorum: 2,
            write_quorum: 2,
            secret: String::new(),
            request_timeout_ms: 2_000,
            members: Vec::new(),
        }
    }
}

impl ClusterConfig {
    /// Whether this node has peers (otherwise N = R = W = 1, whatever is configured).
    pub fn is_clustered(&self) -> bool {
        !self.members.is_empty()
    }

    /// The effective (N, R, W).
    pub fn quorums(&self) -> (usize, usize, usize) {
        if self.is_clustered() {
            (self.replicas, self.read_quorum, self.write_quorum)
        } else {
            (1, 1, 1)
        }
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]` table.
    pub server: ServerConfig,
    /// `[storage]` table.
    pub storage: StorageConfig,
    /// `[cluster]` table.
    pub cluster: ClusterConfig,
}

/// Command-line flags. Each overrides the config key of the same name.
#[derive(Debug, Parser, Default)]
#[command(
    name = "ringkv",
    version,
    about = "A Redis-protocol server over a Dynamo-style key-value store"
)]
pub struct Cli {
    /// TOML config file (see conf/ringkv.toml); flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [server.bind, default 127.0.0.1].
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// RESP port [server.port, default 6379].
    #[arg(long)]
    pub port: Option<u16>,
    /// Require clients to AUTH with this password [server.requirepass].
    #[arg(long)]
    pub requirepass: Option<String>,
    /// Maximum connected clients [server.maxclients, default 10000].
    #[arg(long)]
    pub maxclients: Option<usize>,
    /// Memory limit in bytes, 0 = none; past it writes get -OOM [server.maxmemory].
    #[arg(long)]
    pub maxmemory: Option<u64>,
    /// Close clients idle for this many seconds, 0 = never [server.timeout].
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Number of databases for SELECT [server.databases, default 16].
    #[arg(long)]
    pub databases: Option<u8>,
    /// Largest bulk string accepted, bytes [server.proto_max_bulk_len].
    #[arg(long)]
    pub proto_max_bulk_len: Option<u64>,
    /// Largest number of arguments in one request [server.max_multibulk_len].
    #[arg(long)]
    pub max_multibulk_len: Option<u64>,
    /// Largest unparsed input per client, bytes [server.client_query_buffer_limit].
    #[arg(long)]
    pub client_query_buffer_limit: Option<u64>,
    /// Worker threads, 0 = one per core [server.threads].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Thread scheduling: normal or batch [server.cpu_policy, default normal].
    #[arg(long, value_enum)]
    pub cpu_policy: Option<CpuPolicy>,
    /// Time slice of the node's threads in µs, 100 to 100000; 0 = the kernel's [server.cpu_slice_us, default 0].
    #[arg(long)]
    pub cpu_slice_us: Option<u64>,
    /// Turn transparent huge pages off for the node: true or false [server.disable_thp, default false].
    #[arg(long)]
    pub disable_thp: Option<bool>,
    /// Log filter: error, warn, info, debug, trace [server.log_level].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Storage engine [storage.engine, default disk].
    #[arg(long, value_enum)]
    pub engine: Option<EngineKind>,
    /// Data directory [storage.data_dir, default ./data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Durability: always, everysec or no [storage.fsync, default everysec].
    #[arg(long, value_enum)]
    pub fsync: Option<FsyncMode>,
    /// Disk engine block cache, MiB [storage.cache_mb].
    #[arg(long)]
    pub cache_mb: Option<u64>,
    /// Record cache in front of the disk engine, MiB, 0 = off [storage.record_cache_mb].
    #[arg(long)]
    pub record_cache_mb: Option<u64>,
    /// Disk engine write buffer, MiB [storage.memtable_mb].
    #[arg(long)]
    pub memtable_mb: Option<u64>,
    /// Active expiry sweep interval, ms [storage.expiry_sweep_ms].
    #[arg(long)]
    pub expiry_sweep_ms: Option<u64>,
    /// This node's name [cluster.node_id, default generated].
    #[arg(long)]
    pub node_id: Option<String>,
    /// Reads of concurrent values: siblings or lww [cluster.conflicts].
    #[arg(long, value_enum)]
    pub conflicts: Option<ConflictMode>,
    /// Seconds a delete's tombstone is kept [cluster.tombstone_grace_secs].
    #[arg(long)]
    pub tombstone_grace_secs: Option<u64>,
    /// N, copies of every key [cluster.replicas, default 3].
    #[arg(long)]
    pub replicas: Option<usize>,
    /// R, replies a read waits for [cluster.read_quorum, default 2].
    #[arg(long)]
    pub read_quorum: Option<usize>,
    /// W, acknowledgements a write waits for [cluster.write_quorum, default 2].
    #[arg(long)]
    pub write_quorum: Option<usize>,
    /// Secret peers must prove they know [cluster.secret].
    #[arg(long, env = "RINGKV_CLUSTER_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Milliseconds a coordinator waits for a peer [cluster.request_timeout_ms, default 2000].
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Allow DEBUG ISOLATE/HEAL [server.enable_debug_command].
    #[arg(long)]
    pub enable_debug_command: Option<bool>,
}

impl Config {
    /// Reads and parses a TOML config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The file named by `--config` (or the defaults), with every flag applied, validated.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let mut config = match &cli.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply(cli);
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, cli: &Cli) {
        fn set<T: Clone>(slot: &mut T, flag: &Option<T>) {
            if let Some(value) = flag {
                *slot = value.clone();
            }
        }
        let s = &mut self.server;
        set(&mut s.bind, &cli.bind);
        set(&mut s.port, &cli.port);
        set(&mut s.requirepass, &cli.requirepass);
        set(&mut s.maxclients, &cli.maxclients);
        set(&mut s.maxmemory, &cli.maxmemory);
        set(&mut s.timeout, &cli.timeout);
        set(&mut s.databases, &cli.databases);
        set(&mut s.proto_max_bulk_len, &cli.proto_max_bulk_len);
        set(&mut s.max_multibulk_len, &cli.max_multibulk_len);
        set(&mut s.client_query_buffer_limit, &cli.client_query_buffer_limit);
        set(&mut s.threads, &cli.threads);
        set(&mut s.cpu_policy, &cli.cpu_policy);
        set(&mut s.cpu_slice_us, &cli.cpu_slice_us);
        set(&mut s.disable_thp, &cli.disable_thp);
        set(&mut s.log_level, &cli.log_level);
        set(&mut s.enable_debug_command, &cli.enable_debug_command);
        let st = &mut self.storage;
        set(&mut st.engine, &cli.engine);
        set(&mut st.data_dir, &cli.data_dir);
        set(&mut st.fsync, &cli.fsync);
        set(&mut st.cache_mb, &cli.cache_mb);
        set(&mut st.record_cache_mb, &cli.record_cache_mb);
        set(&mut st.memtable_mb, &cli.memtable_mb);
        set(&mut st.expiry_sweep_ms, &cli.expiry_sweep_ms);
        let c = &mut self.cluster;
        set(&mut c.node_id, &cli.node_id);
        set(&mut c.conflicts, &cli.conflicts);
        set(&mut c.tombstone_grace_secs, &cli.tombstone_grace_secs);
        set(&mut c.replicas, &cli.replicas);
        set(&mut c.read_quorum, &cli.read_quorum);
        set(&mut c.write_quorum, &cli.write_quorum);
        set(&mut c.secret, &cli.secret);
        set(&mut c.request_timeout_ms, &cli.request_timeout_ms);
    }

    /// Refuses values the server could not run with, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if self.server.databases == 0 {
            return invalid("server.databases", "must be at least 1");
        }
        if self.server.maxclients == 0 {
            return invalid("server.maxclients", "must be at least 1");
        }
        if self.server.proto_max_bulk_len < 1024 {
            return invalid("server.proto_max_bulk_len", "must be at least 1024");
        }
        if self.server.max_multibulk_len == 0 {
            return invalid("server.max_multibulk_len", "must be at least 1");
        }
        if self.server.client_query_buffer_limit < 1024 * 1024 {
            return invalid("server.client_query_buffer_limit", "must be at least 1 MiB");
        }
        if self.server.cpu_slice_us != 0 && !CPU_SLICE_US.contains(&self.server.cpu_slice_us) {
            return invalid("server.cpu_slice_us", "must be 0 (the kernel's) or 100 to 100000");
        }
        if self.storage.memtable_mb == 0 {
            return invalid("storage.memtable_mb", "must be at least 1");
        }
        if self.storage.expiry_sweep_ms == 0 {
            return invalid("storage.expiry_sweep_ms", "must be at least 1");
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return invalid("storage.data_dir", "must not be empty");
        }
        self.validate_cluster()
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let c = &self.cluster;
        for (key, value) in [
            ("cluster.replicas", c.replicas),
            ("cluster.read_quorum", c.read_quorum),
            ("cluster.write_quorum", c.write_quorum),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        if c.read_quorum > c.replicas {
            return invalid(
                "cluster.read_quorum",
                format!("R = {} is above N = {} (cluster.replicas)", c.read_quorum, c.replicas),
            );
        }
        if c.write_quorum > c.replicas {
            return invalid(
                "cluster.write_quorum",
                format!("W = {} is above N = {} (cluster.replicas)", c.write_quorum, c.replicas),
            );
        }
        if c.request_timeout_ms == 0 {
            return invalid("cluster.request_timeout_ms", "must be at least 1".into());
        }
        if !c.is_clustered() {
            return Ok(());
        }
        if c.replicas > c.members.len() {
            return invalid(
                "cluster.replicas",
                format!("N = {} is above the {} members listed", c.replicas, c.members.len()),
            );
        }
        if c.secret.is_empty() {
            return invalid("cluster.secret", "must be set when members are listed".into());
        }
        if c.node_id.is_empty() {
            return invalid(
                "cluster.node_id",
                "must name this node's entry in cluster.members".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for m in &c.members {
            if m.id.is_empty() || m.id.contains(|ch: char| ch.is_whitespace() || ch.is_control()) {
                return invalid(
                    "cluster.members.id",
                    format!("{:?} must be non-empty with no spaces", m.id),
                );
            }
            if !seen.insert(m.id.as_str()) {
                return invalid("cluster.members.id", format!("{} is listed twice", m.id));
            }
            if m.vnodes == 0 {
                return invalid("cluster.members.vnodes", format!("{} must have at least 1", m.id));
            }
            for (key, addr) in [
                ("cluster.members.address", &m.address),
                ("cluster.members.peer", &m.peer),
            ] {
                if addr.parse::<std::net::SocketAddr>().is_err() {
                    return invalid(key, format!("{addr:?} of {} is not ip:port", m.id));
                }
            }
        }
        if !seen.contains(c.node_id.as_str()) {
            return invalid("cluster.node_id", format!("{} is not in cluster.members", c.node_id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_file_equals_the_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/ringkv.toml");
        let parsed = Config::from_file(&path).expect("conf/ringkv.toml parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::parse_from(["ringkv", "--port", "7000", "--engine", "memory", "--fsync", "always"]);
        let config = Config::load(&cli).expect("valid");
        assert_eq!(config.server.port, 7000);
        assert_eq!(config.storage.engine, EngineKind::Memory);
        assert_eq!(config.storage.fsync, FsyncMode::Always);
        assert_eq!(config.server.bind, IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn cluster_configs_schedule_as_batch() {
        for node in 1..=3 {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("conf/cluster/node{node}.toml"));
            let parsed = Config::from_file(&path).expect("cluster config parses");
            assert_eq!(parsed.server.cpu_policy, CpuPolicy::Batch);
            assert_eq!(parsed.server.cpu_slice_us, 300);
        }
        let cli = Cli::parse_from(["ringkv", "--cpu-policy", "batch"]);
        assert_eq!(Config::load(&cli).expect("valid").server.cpu_policy, CpuPolicy::Batch);
        let err = toml::from_str::<Config>("[server]\ncpu_policy = \"fifo\"\n").expect_err("unknown policy");
        assert!(err.to_string().contains("normal"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("[server]\nprot = 1\n").is_err());
        let mut config = Config::default();
        config.server.databases = 0;
        let err = config.validate().expect_err("0 databases");
        assert!(err.to_string().contains("server.databases"));
        for (slice, valid) in [(0, true), (99, false), (100, true), (100_000, true), (100_001, false)] {
            let mut config = Config::default();
            config.server.cpu_slice_us = slice;
            match config.validate() {
                Ok(()) => assert!(valid, "{slice} µs accepted"),
                Err(e) => assert!(
                    !valid && e.to_string().contains("server.cpu_slice_us"),
                    "{slice} µs: {e}"
                ),
            }
        }
    }
}
