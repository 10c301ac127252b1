//! Generic key commands: existence, deletion, renaming, expiry, iteration.
//!
//! SCAN's cursor is the next slot to visit (0 when done): every call returns
//! whole slots, so a key present for the whole iteration is returned exactly
//! once, and the same cursor will walk the ring when keys span nodes.

use bytes::Bytes;
use futures_util::future::join_all;

use super::strings::single_sibling;
use super::{is, parse_i64, Ctx};
use crate::clock::now_ms;
use crate::cluster::slot::SLOTS;
use crate::error::{CommandError, CommandResult};
use crate::replica::{Current, Mutation};
use crate::server::reply::Reply;

/// DEL / UNLINK key [key ...]: how many keys held a value. The keys share a
/// coordinator here (the command layer splits the others off), so they are
/// deleted in parallel.
pub async fn del(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let scope = ctx.scope();
    let coordinator = &ctx.node.coordinator;
    let deletes = argv[1..].iter().map(|key| {
        coordinator.update(scope, key, |current| match current {
            Current::Missing => Ok((Mutation::Keep, 0)),
            _ => Ok((Mutation::Delete, 1)),
        })
    });
    let mut deleted = 0;
    for result in join_all(deletes).await {
        deleted += result?;
    }
    Ok(Reply::Int(deleted))
}

/// EXISTS / TOUCH key [key ...]: a key named twice counts twice. The keys are read together.
pub async fn exists(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let now = now_ms();
    let mut found = 0;
    for record in ctx.node.coordinator.read_many(ctx.scope(), &argv[1..]).await {
        if let Some(record) = record? {
            found += i64::from(record.has_live(now)?);
        }
    }
    Ok(Reply::Int(found))
}

/// TYPE key: ringkv stores strings only.
pub async fn type_of(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let record = ctx.node.coordinator.read(ctx.scope(), &argv[1]).await?;
    let live = match record {
        Some(record) => record.has_live(now_ms())?,
        None => false,
    };
    Ok(Reply::Status(if live { "string" } else { "none" }))
}

/// KEYS pattern: every live key of the cluster, each once.
pub async fn keys(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let pattern = Some(argv[1].clone()).filter(|p| p.as_ref() != b"*");
    let answer = ctx
        .node
        .coordinator
        .keys(ctx.session.db, 0..=SLOTS - 1, pattern, 0, false)
        .await?;
    Ok(Reply::Array(
        answer.keys.into_iter().map(|(_, key)| Reply::Bulk(key)).collect(),
    ))
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]
pub async fn scan(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let cursor: u64 = std::str::from_utf8(&argv[1])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CommandError::Other("invalid cursor".into()))?;
    let (mut pattern, mut count, mut type_ok) = (None, 10usize, true);
    let mut i = 2;
    while i < argv.len() {
        let value = argv.get(i + 1).ok_or(CommandError::Syntax)?;
        if is(&argv[i], "match") {
            pattern = Some(value.clone()).filter(|p| p.as_ref() != b"*");
        } else if is(&argv[i], "count") {
            count = usize::try_from(parse_i64(value)?).map_err(|_| CommandError::Syntax)?;
            if count == 0 {
                return Err(CommandError::Syntax);
            }
        } else if is(&argv[i], "type") {
            type_ok = is(value, "string");
        } else {
            return Err(CommandError::Syntax);
        }
        i += 2;
    }
    if cursor >= u64::from(SLOTS) || !type_ok {
        return Ok(scan_reply(0, Vec::new()));
    }
    let answer = ctx
        .node
        .coordinator
        .keys(ctx.session.db, cursor as u16..=SLOTS - 1, pattern, count, false)
        .await?;
    let keys = answer.keys.into_iter().map(|(_, key)| Reply::Bulk(key)).collect();
    Ok(scan_reply(answer.resume.map_or(0, u64::from), keys))
}

fn scan_reply(cursor: u64, keys: Vec<Reply>) -> Reply {
    Reply::Array(vec![Reply::bulk_string(cursor.to_string()), Reply::Array(keys)])
}

/// RANDOMKEY: a live key of the first slot at or after a random one that has
/// any, wrapping around.
pub async fn randomkey(ctx: &mut Ctx<'_>) -> CommandResult<Reply> {
    let start = rand::random_range(0..SLOTS);
    for from in [start, 0] {
        let answer = ctx
            .node
            .coordinator
            .keys(ctx.session.db, from..=SLOTS - 1, None, 1, false)
            .await?;
        if !answer.keys.is_empty() {
            let pick = rand::random_range(0..answer.keys.len());
            return Ok(Reply::Bulk(answer.keys[pick].1.clone()));
        }
    }
    Ok(Reply::Nil)
}

/// RENAME / RENAMENX source destination (the value keeps its expiry).
pub async fn rename(ctx: &mut Ctx<'_>, argv: &[Bytes], only_new: bool) -> CommandResult<Reply> {
    let (src, dst) = (&argv[1][..], &argv[2][..]);
    ctx.node
        .coordinator
        .update_many(ctx.scope(), &[src, dst], |current| {
            let source = current[0].value()?.ok_or(CommandError::NoSuchKey)?;
            let done = if only_new { Reply::Int(1) } else { Reply::Ok };
            if src == dst {
                let reply = if only_new { Reply::Int(0) } else { Reply::Ok };
                return Ok((vec![Mutation::Keep, Mutation::Keep], reply));
            }
            if only_new && !matches!(current[1], Current::Missing) {
                return Ok((vec![Mutation::Keep, Mutation::Keep], Reply::Int(0)));
            }
            let moved = Mutation::Put {
                value: source.value.clone().unwrap_or_default(),
                expire_at_ms: source.expire_at_ms,
            };
            Ok((vec![Mutation::Delete, moved], done))
        })
        .await
}

/// EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT key amount [NX | XX | GT | LT]
pub async fn expire(ctx: &mut Ctx<'_>, argv: &[Bytes], name: &str, unit: u64, absolute: bool) -> CommandResult<Reply> {
    let amount = parse_i64(&argv[2])?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in &argv[3..] {
        match option {
            o if is(o, "nx") => nx = true,
            o if is(o, "xx") => xx = true,
            o if is(o, "gt") => gt = true,
            o if is(o, "lt") => lt = true,
            o => {
                return Err(CommandError::Other(format!(
                    "Unsupported option {}",
                    String::from_utf8_lossy(o)
                )))
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CommandError::Other(
            "NX and XX, GT or LT options at the same time are not compatible".into(),
        ));
    }
    if gt && lt {
        return Err(CommandError::Other(
            "GT and LT options at the same time are not compatible".into(),
        ));
    }
    let invalid = || CommandError::InvalidExpire(name.to_string());
    let ms = amount.checked_mul(unit as i64).ok_or_else(invalid)?;
    let now = now_ms();
    let at = if absolute {
        ms
    } else {
        ms.checked_add(now as i64).ok_or_else(invalid)?
    };
    ctx.node
        .coordinator
        .update(ctx.scope(), &argv[1], |current| {
            let Some(sibling) = current.value()? else {
                return Ok((Mutation::Keep, Reply::Int(0)));
            };
            let has = sibling.expire_at_ms;
            // No expiry counts as infinite for GT and LT.
            let allowed = (!nx || has.is_none())
                && (!xx || has.is_some())
                && (!gt || has.is_some_and(|old| at > old as i64))
                && (!lt || has.is_none_or(|old| at < old as i64));
            if !allowed {
                return Ok((Mutation::Keep, Reply::Int(0)));
            }
            if at <= now as i64 {
                return Ok((Mutation::Delete, Reply::Int(1)));
            }
            let put = Mutation::Put {
                value: sibling.value.clone().unwrap_or_default(),
                expire_at_ms: Some(at as u64),
            };
            Ok((put, Reply::Int(1)))
        })
        .await
}

/// What TTL-like commands report.
#[derive(Debug, Clone, Copy)]
pub enum TtlKind {
    /// TTL / PTTL: time left in `unit` ms.
    Remaining {
        /// Milliseconds per reported unit.
        unit: u64,
    },
    /// EXPIRETIME / PEXPIRETIME: absolute unix time in `unit` ms.
    ExpireTime {
        /// Milliseconds per reported unit.
        unit: u64,
    },
}

/// TTL, PTTL, EXPIRETIME, PEXPIRETIME: -2 if no key, -1 if no expiry.
pub async fn ttl(ctx: &mut Ctx<'_>, argv: &[Bytes], kind: TtlKind) -> CommandResult<Reply> {
    let Some(sibling) = single_sibling(ctx, &argv[1]).await? else {
        return Ok(Reply::Int(-2));
    };
    let Some(at) = sibling.expire_at_ms else {
        return Ok(Reply::Int(-1));
    };
    Ok(Reply::Int(match kind {
        TtlKind::Remaining { unit } => {
            let left = at.saturating_sub(now_ms());
            ((left + unit / 2) / unit) as i64
        }
        TtlKind::ExpireTime { unit } => (at / unit) as i64,
    }))
}

/// PERSIST key: 1 if an expiry was removed.
pub async fn persist(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    ctx.node
        .coordinator
        .update(ctx.scope(), &argv[1], |current| match current.value()? {
            Some(sibling) if sibling.expire_at_ms.is_some() => {
                let put = Mutation::Put {
                    value: sibling.value.clone().unwrap_or_default(),
                    expire_at_ms: None,
                };
                Ok((put, Reply::Int(1)))
            }
            _ => Ok((Mutation::Keep, Reply::Int(0))),
        })
        .await
}
