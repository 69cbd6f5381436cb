//! Making tokens, for `switchboard token` and for tests: HS256 with a
//! secret. A real deployment's backend mints its own; this is for trying
//! the server out (the README's websocat session) and for the test suite.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

/// Claims for `sub`, good for `ttl_secs` from now, reading `rooms` and, if
/// given, publishing to `publish` only.
pub fn claims(sub: &str, ttl_secs: u64, rooms: &[&str], publish: Option<&[&str]>) -> Value {
    let mut claims = json!({
        "sub": sub,
        "exp": now_secs() + ttl_secs,
        "rooms": rooms,
    });
    if let Some(publish) = publish {
        claims["publish"] = json!(publish);
    }
    claims
}

/// Signs `claims` with HS256.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 over JSON claims cannot fail")
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `switchboard token`: prints an HS256 token for the server's
/// `--jwt-secret`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The server's --jwt-secret
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub secret: crate::config::Secret,
    /// The user id (`sub`)
    #[arg(long)]
    pub sub: String,
    /// Rooms it may join and read: names or prefixes ending in `*`
    /// (repeatable or comma-separated)
    #[arg(long, value_delimiter = ',')]
    pub rooms: Vec<String>,
    /// Rooms it may send to, same form [default: the same as --rooms]
    #[arg(long, value_delimiter = ',')]
    pub publish: Option<Vec<String>>,
    /// Its display name
    #[arg(long)]
    pub name: Option<String>,
    /// Refuse `nick`: the name stays the token's
    #[arg(long)]
    pub fixed_name: bool,
    /// How long it is good for: seconds, or with s, m, h or d
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: u64,
    /// The `aud` claim
    #[arg(long)]
    pub aud: Option<String>,
    /// The `iss` claim
    #[arg(long)]
    pub iss: Option<String>,
}

impl TokenArgs {
    /// The token these arguments describe.
    pub fn mint(&self) -> String {
        let rooms: Vec<&str> = self.rooms.iter().map(String::as_str).collect();
        let publish: Option<Vec<&str>> = self
            .publish
            .as_ref()
            .map(|p| p.iter().map(String::as_str).collect());
        let mut claims = claims(&self.sub, self.ttl, &rooms, publish.as_deref());
        for (claim, value) in [("name", &self.name), ("aud", &self.aud), ("iss", &self.iss)] {
            if let Some(value) = value {
                claims[claim] = json!(value);
            }
        }
        if self.fixed_name {
            claims["fixed_name"] = json!(true);
        }
        hs256(self.secret.0.as_bytes(), &claims)
    }
}

/// `90`, `90s`, `15m`, `1h`, `2d` as seconds.
pub fn parse_ttl(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let (digits, unit) = match raw.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&raw[..at], c),
        _ => (raw, 's'),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 90s, 15m, 1h or 2d"))?;
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        other => return Err(format!("unknown unit {other:?}: use s, m, h or d")),
    };
    n.checked_mul(unit).ok_or_else(|| "too long".to_owned())
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls_read_with_units() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("2d"), Ok(172_800));
        assert!(parse_ttl("1y").is_err() && parse_ttl("h").is_err() && parse_ttl("").is_err());
    }
}
