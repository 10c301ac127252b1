//! Errors a command can answer with. Every variant's `Display` is the exact
//! Redis 7 error line (prefix included, no leading `-`), so this enum is the one
//! place where failures become Redis error replies.

use crate::storage::StorageError;
use crate::version::{WriteError, MAX_SIBLINGS};

/// A command's failure, sent to the client as a RESP error.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command name is not in the command table.
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand {
        /// The name as the client sent it (lossy UTF-8).
        name: String,
        /// The first arguments, each quoted as Redis does.
        args: String,
    },
    /// A container command got a subcommand it does not have.
    #[error("ERR unknown subcommand '{sub}'. Try {command} HELP.")]
    UnknownSubcommand {
        /// The subcommand as sent.
        sub: String,
        /// The container command, upper case.
        command: String,
    },
    /// Arity check failed.
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(String),
    /// Options that do not parse or do not go together.
    #[error("ERR syntax error")]
    Syntax,
    /// An argument that must be a 64-bit integer is not.
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// An argument or stored value that must be a float is not.
    #[error("ERR value is not a valid float")]
    NotFloat,
    /// INCR family would leave the i64 range.
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    /// INCRBYFLOAT would produce NaN or infinity.
    #[error("ERR increment would produce NaN or Infinity")]
    NanOrInfinity,
    /// An expire time that is not positive or does not fit.
    #[error("ERR invalid expire time in '{0}' command")]
    InvalidExpire(String),
    /// SELECT with a database out of range.
    #[error("ERR DB index is out of range")]
    DbOutOfRange,
    /// RENAME of a key that does not exist.
    #[error("ERR no such key")]
    NoSuchKey,
    /// SETRANGE/APPEND would build a string larger than proto_max_bulk_len.
    #[error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")]
    StringTooLong,
    /// SETRANGE with a negative offset.
    #[error("ERR offset is out of range")]
    OffsetOutOfRange,
    /// Any other ERR with a fixed text.
    #[error("ERR {0}")]
    Other(String),
    /// A command other than AUTH/HELLO before authenticating.
    #[error("NOAUTH Authentication required.")]
    NoAuth,
    /// HELLO without AUTH on a connection that has not authenticated.
    #[error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")]
    HelloNoAuth,
    /// AUTH with a wrong password.
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPass,
    /// AUTH while no password is configured.
    #[error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")]
    AuthNotConfigured,
    /// HELLO with a protocol version we do not speak.
    #[error("NOPROTO unsupported protocol version")]
    NoProto,
    /// A command that may grow memory while memory is above maxmemory.
    #[error("OOM command not allowed when used memory > 'maxmemory'.")]
    OutOfMemory,
    /// A read-modify-write command on a key that holds concurrent values.
    #[error("CONFLICT key has {0} concurrent values; read them with GET or VGET and write the resolved one with SET or VSET")]
    Conflict(usize),
    /// A write that would keep more concurrent values than the cap.
    #[error("CONFLICT too many concurrent values for this key ({0} max); resolve them with SET or VSET")]
    TooManySiblings(usize),
    /// A write acknowledged by fewer than W replicas. Those that took it keep it.
    #[error("NOQUORUM write reached {acked} of {needed} required replicas (W={needed}, N={replicas}); replicas that took it keep it")]
    WriteQuorum {
        /// Replicas (the coordinator included) that acknowledged.
        acked: usize,
        /// W.
        needed: usize,
        /// N.
        replicas: usize,
    },
    /// A read answered by fewer than R replicas.
    #[error("NOQUORUM read reached {answered} of {needed} required replicas (R={needed}, N={replicas})")]
    ReadQuorum {
        /// Replicas that answered.
        answered: usize,
        /// R.
        needed: usize,
        /// N.
        replicas: usize,
    },
    /// No replica of the key could be reached to coordinate a write.
    #[error("CLUSTERDOWN no replica of this key is reachable")]
    NoReplica,
    /// A forwarded command or cluster-wide operation failed on a peer.
    #[error("TRYAGAIN node {node} did not answer: {reason}")]
    Peer {
        /// The member's name.
        node: String,
        /// What went wrong.
        reason: String,
    },
    /// Keys whose replicas share no node, in a command that must be atomic.
    #[error("CROSSSLOT Keys in request don't hash to the same slot")]
    CrossSlot,
    /// The storage engine failed; the write (if any) did not happen.
    #[error("ERR storage error: {0}")]
    Storage(#[from] StorageError),
}

impl From<WriteError> for CommandError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::TooManySiblings => CommandError::TooManySiblings(MAX_SIBLINGS),
        }
    }
}

impl CommandError {
    /// `ERR wrong number of arguments` for a command name given in any case.
    pub fn arity(name: &[u8]) -> Self {
        CommandError::WrongArity(String::from_utf8_lossy(name).to_lowercase())
    }

    /// The Redis text for an unknown command: up to the first arguments, quoted.
    pub fn unknown_command(name: &[u8], args: &[bytes::Bytes]) -> Self {
        let mut quoted = String::new();
        for arg in args.iter().take(20) {
            quoted.push('\'');
            quoted.push_str(&String::from_utf8_lossy(&arg[..arg.len().min(128)]));
            quoted.push_str("' ");
        }
        CommandError::UnknownCommand {
            name: String::from_utf8_lossy(&name[..name.len().min(128)]).into_owned(),
            args: quoted,
        }
    }
}

/// Shorthand for command handlers.
pub type CommandResult<T> = Result<T, CommandError>;

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn texts_match_redis_7() {
        assert_eq!(
            CommandError::arity(b"GET").to_string(),
            "ERR wrong number of arguments for 'get' command"
        );
        let unknown = CommandError::unknown_command(b"foo", &[Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        assert_eq!(
            unknown.to_string(),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            CommandError::unknown_command(b"foo", &[]).to_string(),
            "ERR unknown command 'foo', with args beginning with: "
        );
    }
}
