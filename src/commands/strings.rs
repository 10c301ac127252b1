//! String commands. Reads answer nil, a bulk string, or, when a key holds
//! concurrent values, an array of them. Read-modify-write commands run under
//! the key's lock at its coordinating replica and refuse (`-CONFLICT`) to act
//! on concurrent values rather than guess.

use bytes::{Bytes, BytesMut};

use super::{is, parse_f64, parse_i64, Ctx};
use crate::clock::now_ms;
use crate::cluster::coordinator::{Found, Presented};
use crate::config::ConflictMode;
use crate::error::{CommandError, CommandResult};
use crate::node::Stats;
use crate::replica::{Current, Mutation};
use crate::server::reply::{format_double, Reply};
use crate::version::{Sibling, VersionVector};

/// The reply for a read of `found`: nil, one value, or every concurrent value.
pub fn read_reply(found: Option<&Found>, conflicts: ConflictMode) -> CommandResult<Reply> {
    let Some(found) = found else {
        return Ok(Reply::Nil);
    };
    Ok(match found.presented(now_ms(), conflicts)? {
        Presented::Missing => Reply::Nil,
        Presented::One(value) => Reply::Bulk(value),
        Presented::Many(values) => Reply::Array(values.into_iter().map(Reply::Bulk).collect()),
    })
}

/// The single live value (with its expiry) of a key, for read-only commands
/// that need one (STRLEN, GETRANGE, TTL...): `-CONFLICT` on concurrent values.
pub async fn single_sibling(ctx: &mut Ctx<'_>, key: &[u8]) -> CommandResult<Option<Sibling>> {
    let record = ctx.node.coordinator.read(ctx.scope(), key).await?;
    let conflicts = ctx.node.coordinator.local().conflicts();
    match record {
        Some(found) => {
            let record = found.record()?;
            Ok(Current::of(&record, now_ms(), conflicts).value()?.cloned())
        }
        None => Ok(None),
    }
}

fn value_of(sibling: &Sibling) -> Bytes {
    sibling.value.clone().unwrap_or_default()
}

/// GET key
pub async fn get(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let record = ctx.node.coordinator.read(ctx.scope(), &argv[1]).await?;
    let reply = read_reply(record.as_ref(), ctx.node.coordinator.local().conflicts())?;
    let stats = &ctx.node.stats;
    Stats::bump(if reply == Reply::Nil {
        &stats.misses
    } else {
        &stats.hits
    });
    Ok(reply)
}

/// How a write sets the key's expiry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expiry {
    /// No expiry (plain SET clears any).
    None,
    /// Keep what the key has (KEEPTTL, APPEND, INCR...).
    Keep,
    /// Absolute unix ms.
    At(u64),
}

impl Expiry {
    fn resolve(self, current: Option<&Sibling>) -> Option<u64> {
        match self {
            Expiry::None => None,
            Expiry::Keep => current.and_then(|s| s.expire_at_ms),
            Expiry::At(at) => Some(at),
        }
    }
}

/// Turns an `EX`-style amount into an absolute time: `unit` ms per unit,
/// relative to now unless `absolute`. Redis refuses non-positive values and
/// overflow with "invalid expire time in '<cmd>' command".
pub fn expire_at(amount: i64, unit: u64, absolute: bool, cmd: &str) -> CommandResult<u64> {
    let invalid = || CommandError::InvalidExpire(cmd.to_string());
    if amount <= 0 {
        return Err(invalid());
    }
    let ms = (amount as u64)
        .checked_mul(unit)
        .filter(|&ms| ms <= i64::MAX as u64)
        .ok_or_else(invalid)?;
    if absolute {
        return Ok(ms);
    }
    now_ms()
        .checked_add(ms)
        .filter(|&at| at <= i64::MAX as u64)
        .ok_or_else(invalid)
}

/// SET key value [NX | XX] [GET] [EX s | PX ms | EXAT ts | PXAT ts-ms | KEEPTTL]
pub async fn set(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let (mut nx, mut xx, mut get, mut expiry) = (false, false, false, None);
    let mut i = 3;
    while i < argv.len() {
        let arg = &argv[i];
        let timed = [
            ("ex", 1000, false),
            ("px", 1, false),
            ("exat", 1000, true),
            ("pxat", 1, true),
        ]
        .into_iter()
        .find(|(name, _, _)| is(arg, name));
        if let Some((_, unit, absolute)) = timed {
            let amount = argv.get(i + 1).ok_or(CommandError::Syntax)?;
            if expiry.is_some() {
                return Err(CommandError::Syntax);
            }
            expiry = Some((parse_i64(amount)?, unit, absolute));
            i += 2;
            continue;
        }
        if is(arg, "nx") && !xx {
            nx = true;
        } else if is(arg, "xx") && !nx {
            xx = true;
        } else if is(arg, "get") {
            get = true;
        } else if is(arg, "keepttl") && expiry.is_none() {
            expiry = Some((0, 0, false));
        } else {
            return Err(CommandError::Syntax);
        }
        i += 1;
    }
    let expiry = match expiry {
        None => Expiry::None,
        Some((_, 0, _)) => Expiry::Keep,
        Some((amount, unit, absolute)) => Expiry::At(expire_at(amount, unit, absolute, "set")?),
    };
    let value = argv[2].clone();
    if !nx && !xx && !get && expiry != Expiry::Keep {
        // A blind write: nothing about the old value matters.
        let coordinator = &ctx.node.coordinator;
        coordinator
            .put(ctx.scope(), ctx.first_key(argv), value, expiry.resolve(None))
            .await?;
        return Ok(Reply::Ok);
    }
    ctx.node
        .coordinator
        .update(ctx.scope(), &argv[1], |current| {
            let exists = !matches!(current, Current::Missing);
            let old = if get { current.value()?.map(value_of) } else { None };
            if (nx && exists) || (xx && !exists) {
                let reply = if get { Reply::bulk_or_nil(old) } else { Reply::Nil };
                return Ok((Mutation::Keep, reply));
            }
            let keep = if expiry == Expiry::Keep { current.value()? } else { None };
            let put = Mutation::Put {
                value,
                expire_at_ms: expiry.resolve(keep),
            };
            Ok((put, if get { Reply::bulk_or_nil(old) } else { Reply::Ok }))
        })
        .await
}

/// Writes `value` unconditionally with `expiry`, returning what `reply` makes of the old value.
async fn put(
    ctx: &mut Ctx<'_>,
    key: &Bytes,
    value: Bytes,
    expiry: Expiry,
    reply: impl FnOnce(Option<Bytes>) -> Reply,
) -> CommandResult<Reply> {
    ctx.node
        .coordinator
        .update(ctx.scope(), key, |current| {
            let old = current.value()?;
            let expire_at_ms = expiry.resolve(old);
            Ok((Mutation::Put { value, expire_at_ms }, reply(old.map(value_of))))
        })
        .await
}

/// SETNX key value
pub async fn setnx(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let value = argv[2].clone();
    ctx.node
        .coordinator
        .update(ctx.scope(), &argv[1], |current| match current {
            Current::Missing => Ok((
                Mutation::Put {
                    value,
                    expire_at_ms: None,
                },
                Reply::Int(1),
            )),
            _ => Ok((Mutation::Keep, Reply::Int(0))),
        })
        .await
}

/// SETEX key seconds value / PSETEX key ms value (`unit` ms per unit).
pub async fn setex(ctx: &mut Ctx<'_>, argv: &[Bytes], unit: u64) -> CommandResult<Reply> {
    let name = if unit == 1 { "psetex" } else { "setex" };
    let at = expire_at(parse_i64(&argv[2])?, unit, false, name)?;
    put(ctx, &argv[1], argv[3].clone(), Expiry::At(at), |_| Reply::Ok).await
}

/// GETSET key value
pub async fn getset(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    put(ctx, &argv[1], argv[2].clone(), Expiry::None, Reply::bulk_or_nil).await
}

/// GETDEL key
pub async fn getdel(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    ctx.node
        .coordinator
        .update(ctx.scope(), &argv[1], |current| match current.value()? {
            None => Ok((Mutation::Keep, Reply::Nil)),
            Some(old) => Ok((Mutation::Delete, Reply::Bulk(value_of(old)))),
        })
        .await
}

/// GETEX key [EX s | PX ms | EXAT ts | PXAT ts-ms | PERSIST]
pub async fn getex(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let expiry = match argv.len() {
        2 => None,
        3 if is(&argv[2], "persist") => Some(Expiry::None),
        4 => {
            let (unit, absolute) = match &argv[2] {
                a if is(a, "ex") => (1000, false),
                a if is(a, "px") => (1, false),
                a if is(a, "exat") => (1000, true),
                a if is(a, "pxat") => (1, true),
                _ => return Err(CommandError::Syntax),
            };
            Some(Expiry::At(expire_at(parse_i64(&argv[3])?, unit, absolute, "getex")?))
        }
        _ => return Err(CommandError::Syntax),
    };
    let Some(expiry) = expiry else {
        let record = ctx.node.coordinator.read(ctx.scope(), &argv[1]).await?;
        return read_reply(record.as_ref(), ctx.node.coordinator.local().conflicts());
    };
    ctx.node
        .coordinator
        .update(ctx.scope(), &argv[1], |current| match current.value()? {
            None => Ok((Mutation::Keep, Reply::Nil)),
            Some(old) => {
                let value = value_of(old);
                let put = Mutation::Put {
                    value: value.clone(),
                    expire_at_ms: expiry.resolve(Some(old)),
                };
                Ok((put, Reply::Bulk(value)))
            }
        })
        .await
}

/// MGET key [key ...]: the keys are read together (one message per replica), each at its own quorum.
pub async fn mget(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let conflicts = ctx.node.coordinator.local().conflicts();
    let mut replies = Vec::with_capacity(argv.len() - 1);
    for record in ctx.node.coordinator.read_many(ctx.scope(), &argv[1..]).await {
        replies.push(read_reply(record?.as_ref(), conflicts)?);
    }
    Ok(Reply::Array(replies))
}

/// VGET key: `[context, value...]`, the key's causal context as an opaque
/// token followed by its live values (none if the key has no value).
pub async fn vget(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let record = ctx.node.coordinator.read(ctx.scope(), &argv[1]).await?;
    let Some(record) = record else {
        return Ok(Reply::Array(vec![Reply::bulk_static(b"")]));
    };
    let record = record.record()?;
    let mut reply = vec![Reply::Bulk(Bytes::from(record.context.encode_token()))];
    reply.extend(record.live(now_ms()).map(|s| Reply::Bulk(value_of(s))));
    Ok(Reply::Array(reply))
}

/// VSET key context value [EX seconds | PX milliseconds]: writes `value`
/// superseding exactly the versions `context` (from VGET) covers; versions
/// written since stay as siblings.
pub async fn vset(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let context = if argv[2].is_empty() {
        VersionVector::default()
    } else {
        VersionVector::decode_token(&argv[2])
            .ok_or_else(|| CommandError::Other("invalid causal context token".into()))?
    };
    let expire_at_ms = match &argv[4..] {
        [] => None,
        [unit, amount] if is(unit, "ex") => Some(expire_at(parse_i64(amount)?, 1000, false, "vset")?),
        [unit, amount] if is(unit, "px") => Some(expire_at(parse_i64(amount)?, 1, false, "vset")?),
        _ => return Err(CommandError::Syntax),
    };
    let value = argv[3].clone();
    ctx.node
        .coordinator
        .update(ctx.scope(), &argv[1], |_| {
            let put = Mutation::PutAfter {
                value,
                expire_at_ms,
                context,
            };
            Ok((put, Reply::Ok))
        })
        .await
}

/// MSET key value [key value ...] / MSETNX (only if no key exists).
pub async fn mset(ctx: &mut Ctx<'_>, argv: &[Bytes], only_new: bool) -> CommandResult<Reply> {
    if argv.len().is_multiple_of(2) {
        let name = if only_new { "msetnx" } else { "mset" };
        return Err(CommandError::WrongArity(name.to_string()));
    }
    let keys: Vec<&[u8]> = argv[1..].iter().step_by(2).map(|k| &k[..]).collect();
    let values: Vec<Bytes> = argv[2..].iter().step_by(2).cloned().collect();
    ctx.node
        .coordinator
        .update_many(ctx.scope(), &keys, |current| {
            if only_new && current.iter().any(|c| !matches!(c, Current::Missing)) {
                return Ok((current.iter().map(|_| Mutation::Keep).collect(), Reply::Int(0)));
            }
            let puts = values
                .into_iter()
                .map(|value| Mutation::Put {
                    value,
                    expire_at_ms: None,
                })
                .collect();
            Ok((puts, if only_new { Reply::Int(1) } else { Reply::Ok }))
        })
        .await
}

/// Rewrites the value at `key` (empty if absent) with `edit`, keeping its
/// expiry, and replies with the new length. `edit` returns None to leave the
/// key as it is. Refuses results over proto_max_bulk_len.
async fn edit_value(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    edit: impl FnOnce(&[u8]) -> Option<BytesMut>,
) -> CommandResult<Reply> {
    let max_len = ctx.node.settings.read().limits.max_bulk_len;
    ctx.node
        .coordinator
        .update(ctx.scope(), key, |current| {
            let old = current.value()?;
            let old_value = old.and_then(|s| s.value.as_deref()).unwrap_or_default();
            let Some(value) = edit(old_value) else {
                return Ok((Mutation::Keep, Reply::Int(old_value.len() as i64)));
            };
            if value.len() as u64 > max_len {
                return Err(CommandError::StringTooLong);
            }
            let len = value.len() as i64;
            let put = Mutation::Put {
                value: value.freeze(),
                expire_at_ms: Expiry::Keep.resolve(old),
            };
            Ok((put, Reply::Int(len)))
        })
        .await
}

/// APPEND key value
pub async fn append(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let suffix = &argv[2];
    edit_value(ctx, &argv[1], |old| {
        let mut value = BytesMut::with_capacity(old.len() + suffix.len());
        value.extend_from_slice(old);
        value.extend_from_slice(suffix);
        Some(value)
    })
    .await
}

/// The single live value of a key, for read-only commands that need one: `-CONFLICT` on concurrent values.
pub async fn single_value(ctx: &mut Ctx<'_>, key: &[u8]) -> CommandResult<Option<Bytes>> {
    Ok(single_sibling(ctx, key).await?.and_then(|s| s.value))
}

/// STRLEN key
pub async fn strlen(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    Ok(Reply::Int(
        single_value(ctx, &argv[1]).await?.map_or(0, |v| v.len() as i64),
    ))
}

/// GETRANGE key start end (negative offsets count from the end).
pub async fn getrange(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let (mut start, mut end) = (parse_i64(&argv[2])?, parse_i64(&argv[3])?);
    let value = single_value(ctx, &argv[1]).await?.unwrap_or_default();
    let len = value.len() as i64;
    if (start < 0 && end < 0 && start > end) || len == 0 {
        return Ok(Reply::bulk_static(b""));
    }
    if start < 0 {
        start = (len + start).max(0);
    }
    if end < 0 {
        end = (len + end).max(0);
    }
    end = end.min(len - 1);
    if start > end {
        return Ok(Reply::bulk_static(b""));
    }
    Ok(Reply::Bulk(value.slice(start as usize..=end as usize)))
}

/// SETRANGE key offset value (pads with zero bytes; an empty value changes nothing).
pub async fn setrange(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let offset = usize::try_from(parse_i64(&argv[2])?).map_err(|_| CommandError::OffsetOutOfRange)?;
    let patch = &argv[3];
    if !patch.is_empty()
        && (offset as u64).saturating_add(patch.len() as u64) > ctx.node.settings.read().limits.max_bulk_len
    {
        // Checked before building a huge buffer.
        return Err(CommandError::StringTooLong);
    }
    edit_value(ctx, &argv[1], |old| {
        if patch.is_empty() {
            return None;
        }
        let mut value = BytesMut::from(old);
        if value.len() < offset + patch.len() {
            value.resize(offset + patch.len(), 0);
        }
        value[offset..offset + patch.len()].copy_from_slice(patch);
        Some(value)
    })
    .await
}

/// INCR, DECR, INCRBY, DECRBY: add `by` to the integer at `key`.
pub async fn incr_by(ctx: &mut Ctx<'_>, key: &Bytes, by: i64) -> CommandResult<Reply> {
    ctx.node
        .coordinator
        .update(ctx.scope(), key, |current| {
            let old = current.value()?;
            let base = match old.and_then(|s| s.value.as_ref()) {
                Some(value) => parse_i64(value)?,
                None => 0,
            };
            let new = base.checked_add(by).ok_or(CommandError::Overflow)?;
            let put = Mutation::Put {
                value: Bytes::from(itoa::Buffer::new().format(new).to_owned()),
                expire_at_ms: Expiry::Keep.resolve(old),
            };
            Ok((put, Reply::Int(new)))
        })
        .await
}

/// INCRBYFLOAT key increment
pub async fn incrbyfloat(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let by = parse_f64(&argv[2])?;
    ctx.node
        .coordinator
        .update(ctx.scope(), &argv[1], |current| {
            let old = current.value()?;
            let base = match old.and_then(|s| s.value.as_ref()) {
                Some(value) => parse_f64(value)?,
                None => 0.0,
            };
            let new = base + by;
            if !new.is_finite() {
                return Err(CommandError::NanOrInfinity);
            }
            let text = Bytes::from(format_double(new));
            let put = Mutation::Put {
                value: text.clone(),
                expire_at_ms: Expiry::Keep.resolve(old),
            };
            Ok((put, Reply::Bulk(text)))
        })
        .await
}
