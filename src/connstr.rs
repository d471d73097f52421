//! PostgreSQL connection strings, the one parser: libpq's two forms taken apart once, so that
//! TLS options can be taken out of them and a password never reaches a log.
//!
//! - URL: `postgres://[user[:password]@]host[:port][/database][?key=value&…]`
//!   (`postgresql://` too); a password may sit in the user info or in the query string.
//! - key=value: `host=h user=u password='a b'` (values may be single-quoted, with `\'` and
//!   `\\` escapes).

use crate::error::{Error, Result};

/// What a redacted password reads as.
const MASK: &str = "***";

/// A connection string, taken apart.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ConnString {
    /// For the URL form, everything before the query string; `None` for key=value.
    url_base: Option<String>,
    params: Vec<(String, String)>,
}

impl ConnString {
    /// Parses either form. Only a key=value string with an unterminated quote or a word that
    /// is not `key=value` is refused; hosts, ports and keys are the `postgres` crate's to check.
    pub(crate) fn parse(s: &str) -> Result<ConnString> {
        let s = s.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            let (base, query) = s.split_once('?').unwrap_or((s, ""));
            let params = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect();
            return Ok(ConnString {
                url_base: Some(base.to_owned()),
                params,
            });
        }
        Ok(ConnString {
            url_base: None,
            params: parse_key_values(s)?,
        })
    }

    /// The last value given for `key`.
    #[cfg(test)]
    pub(crate) fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Removes every `key`, returning the last value given for it.
    pub(crate) fn take(&mut self, key: &str) -> Option<String> {
        let mut last = None;
        self.params.retain(|(k, v)| {
            if k == key {
                last = Some(v.clone());
                false
            } else {
                true
            }
        });
        last
    }

    /// Sets `key` to `value` (at the end, replacing any earlier value).
    pub(crate) fn set(&mut self, key: &str, value: &str) {
        self.take(key);
        self.params.push((key.to_owned(), value.to_owned()));
    }

    /// The string to hand to the `postgres` crate, password included.
    pub(crate) fn render(&self) -> String {
        self.render_with(false)
    }

    /// The string with every password replaced by `***`: the only form that may be logged.
    pub(crate) fn redacted(&self) -> String {
        self.render_with(true)
    }

    fn render_with(&self, redact: bool) -> String {
        let value = |k: &str, v: &str| {
            if redact && k == "password" {
                MASK.to_owned()
            } else {
                v.to_owned()
            }
        };
        match &self.url_base {
            Some(base) => {
                let mut out = if redact {
                    redact_userinfo(base)
                } else {
                    base.clone()
                };
                for (i, (k, v)) in self.params.iter().enumerate() {
                    out.push(if i == 0 { '?' } else { '&' });
                    out.push_str(k);
                    out.push('=');
                    out.push_str(&value(k, v));
                }
                out
            }
            None => self
                .params
                .iter()
                .map(|(k, v)| format!("{k}={}", quote(&value(k, v))))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// A connection string that is safe to log: every password replaced by `***`. A string that
/// cannot be parsed is not echoed at all.
pub fn redact(conn: &str) -> String {
    match ConnString::parse(conn) {
        Ok(c) => c.redacted(),
        Err(_) => "(unparsable connection string)".to_owned(),
    }
}

/// `scheme://user:secret@host…` → `scheme://user:***@host…`. The user info ends at the last
/// `@` of the authority (a password may itself hold an `@`).
fn redact_userinfo(base: &str) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:{MASK}@{host}{path}"),
            None => base.to_owned(),
        },
        None => base.to_owned(),
    }
}

/// libpq's key=value form: `key = value` pairs separated by white space; a value may be
/// single-quoted (then it may hold spaces, `\'` and `\\`).
fn parse_key_values(s: &str) -> Result<Vec<(String, String)>> {
    let bad = |m: &str| Error::config(format!("invalid connection string: {m}"));
    let mut params = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(params);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad(&format!("`{key}` is not followed by `=`")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(bad(&format!("the value of `{key}` has no closing quote"))),
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(bad(&format!("the value of `{key}` ends in `\\`"))),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        params.push((key, value));
    }
}

/// A key=value value, quoted when it must be.
fn quote(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return v.to_owned();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_table() {
        let cases: &[(&str, &str)] = &[
            (
                "postgres://u:secret@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
            ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
            ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgres://h/db", "postgres://h/db"),
            (
                "postgres://u@h/db?password=x",
                "postgres://u@h/db?password=***",
            ),
            (
                "postgres://u:a@h/db?sslmode=require&password=x&application_name=p",
                "postgres://u:***@h/db?sslmode=require&password=***&application_name=p",
            ),
            ("postgres://h/db@x", "postgres://h/db@x"), // an @ after the authority
            (
                "host=h password=secret user=u",
                "host=h password=*** user=u",
            ),
            ("host=h password='a b' user=u", "host=h password=*** user=u"),
            ("host=h password = secret", "host=h password=***"),
            ("password='it\\'s' host=h", "password=*** host=h"),
            ("host=h user=u", "host=h user=u"),
            (
                "host=h password='unterminated",
                "(unparsable connection string)",
            ),
            ("host=h password", "(unparsable connection string)"),
        ];
        for &(input, want) in cases {
            let got = redact(input);
            assert_eq!(got, want, "{input}");
            for secret in ["secret", "x", "a b", "it's", "p@ss", "unterminated"] {
                if input.contains(&format!("password={secret}"))
                    || input.contains(&format!(":{secret}@"))
                {
                    assert!(!got.contains(secret), "{input} leaks {secret}: {got}");
                }
            }
        }
    }

    #[test]
    fn parse_take_set_render() {
        let mut c = ConnString::parse("postgres://u:pw@h/db?sslmode=verify-full&x=1").unwrap();
        assert_eq!(c.take("sslmode").as_deref(), Some("verify-full"));
        c.set("sslmode", "require");
        assert_eq!(c.render(), "postgres://u:pw@h/db?x=1&sslmode=require");
        let mut c = ConnString::parse("host=h  password='a b\\'c' sslmode = disable").unwrap();
        assert_eq!(c.param("password"), Some("a b'c"));
        assert_eq!(c.take("sslmode").as_deref(), Some("disable"));
        assert_eq!(c.render(), "host=h password='a b\\'c'");
        // What we render, the postgres crate reads back as it was meant.
        let pg: postgres::Config = c.render().parse().expect("postgres parses it");
        assert_eq!(pg.get_password(), Some(&b"a b'c"[..]));
        assert_eq!(ConnString::parse("").unwrap().render(), "");
        assert!(ConnString::parse("host=h 'oops'").is_err());
    }
}
