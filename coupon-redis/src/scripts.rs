//! The Lua scripts, kept as files in `lua/` and run by SHA.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, RedisResult, ServerErrorKind, ToRedisArgs};

/// A script run by `EVALSHA`. On `NOSCRIPT` (after a restart, a failover or a
/// `SCRIPT FLUSH`) the same call is sent once more as `EVAL` with the source, which
/// runs it and caches it again. Safe: `NOSCRIPT` means nothing ran. (Loading with
/// `SCRIPT LOAD` and re-sending `EVALSHA` is not enough: another flush can land in
/// between.)
#[derive(Debug)]
pub struct LuaScript {
    source: &'static str,
    sha: String,
}

impl LuaScript {
    fn new(source: &'static str) -> Self {
        Self {
            source,
            sha: redis::Script::new(source).get_hash().to_owned(),
        }
    }

    /// The SHA1 `EVALSHA` uses.
    pub fn sha(&self) -> &str {
        &self.sha
    }

    /// A call of this script with `keys`; add arguments with [`ScriptCall::arg`].
    pub fn call<'a>(&'a self, keys: &[&str]) -> ScriptCall<'a> {
        let mut args = keys.len().to_redis_args();
        args.extend(keys.iter().map(|k| k.as_bytes().to_vec()));
        ScriptCall { script: self, args }
    }
}

/// One call of a [`LuaScript`].
pub struct ScriptCall<'a> {
    script: &'a LuaScript,
    // The arguments after the script: numkeys, keys, args.
    args: Vec<Vec<u8>>,
}

impl ScriptCall<'_> {
    /// Adds an argument.
    pub fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    fn command(&self, verb: &str, script: &str) -> Cmd {
        let mut cmd = redis::cmd(verb);
        cmd.arg(script);
        for a in &self.args {
            cmd.arg(a.as_slice());
        }
        cmd
    }

    /// Runs it: `EVALSHA`, or `EVAL` if the server does not have the script.
    pub async fn run<T: FromRedisValue>(&self, con: &mut impl ConnectionLike) -> RedisResult<T> {
        match self.command("EVALSHA", &self.script.sha).query_async(con).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.command("EVAL", self.script.source).query_async(con).await
            }
            other => other,
        }
    }
}

/// `lua/*.lua` with `lua/prelude.lua` (holdings and campaign creation) in front.
macro_rules! with_prelude {
    ($file:literal) => {
        concat!(include_str!("../lua/prelude.lua"), include_str!($file))
    };
}

/// `lua/open.lua`.
pub static OPEN: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(with_prelude!("../lua/open.lua")));
/// `lua/admit.lua`.
pub static ADMIT: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(with_prelude!("../lua/admit.lua")));
/// `lua/release.lua`.
pub static RELEASE: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(with_prelude!("../lua/release.lua")));
/// `lua/restore.lua`.
pub static RESTORE: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(with_prelude!("../lua/restore.lua")));
/// `lua/forget.lua`.
pub static FORGET: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(include_str!("../lua/forget.lua")));
/// `lua/close.lua`.
pub static CLOSE: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(include_str!("../lua/close.lua")));
/// `lua/fence.lua`.
pub static FENCE: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(include_str!("../lua/fence.lua")));
