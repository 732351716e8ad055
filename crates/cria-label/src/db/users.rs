//! People and their sessions. Passwords are stored as Argon2 PHC strings ([`crate::auth`]),
//! session tokens as SHA-256 digests: the database alone lets nobody log in.

use super::now;
use crate::error::{LabelError, Result};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Annotator,
    /// The people behind the chat page's feedback (one per API key name); they never log in.
    Chat,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Annotator => "annotator",
            Role::Chat => "chat",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "annotator" => Some(Role::Annotator),
            "chat" => Some(Role::Chat),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    /// Still on the one-time password: nothing but choosing a new one is allowed.
    pub must_change: bool,
}

fn user(r: &rusqlite::Row) -> rusqlite::Result<User> {
    let role: String = r.get(2)?;
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Chat),
        disabled: r.get(3)?,
        must_change: r.get(4)?,
    })
}

const COLUMNS: &str = "id, name, role, disabled, must_change";

/// A name people can type and read: 1 to 64 letters, digits, `.`, `-`, `_` or `@`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(LabelError::Invalid(format!(
            "user name `{name}`: use 1 to 64 letters, digits, `.`, `-`, `_` or `@`"
        )))
    }
}

/// Adds a person with the password hash `hash` (a one-time password: they choose their own at
/// first login, except chat users, who never log in).
pub fn add(t: &Transaction, name: &str, role: Role, hash: &str) -> Result<User> {
    check_name(name)?;
    if by_name(t, name)?.is_some() {
        return Err(LabelError::Invalid(format!(
            "the user `{name}` exists already"
        )));
    }
    t.execute(
        "INSERT INTO users (name, role, password, created, must_change) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, role.as_str(), hash, now(), role != Role::Chat],
    )?;
    Ok(User {
        id: t.last_insert_rowid(),
        name: name.to_string(),
        role,
        disabled: false,
        must_change: role != Role::Chat,
    })
}

/// A person and their password hash.
pub fn by_name(c: &Connection, name: &str) -> Result<Option<(User, String)>> {
    Ok(c.query_row(
        &format!("SELECT {COLUMNS}, password FROM users WHERE name = ?1"),
        params![name],
        |r| Ok((user(r)?, r.get(5)?)),
    )
    .optional()?)
}

pub fn by_id(c: &Connection, id: i64) -> Result<Option<User>> {
    Ok(c.query_row(
        &format!("SELECT {COLUMNS} FROM users WHERE id = ?1"),
        params![id],
        user,
    )
    .optional()?)
}

pub fn list(c: &Connection) -> Result<Vec<User>> {
    let mut q = c.prepare(&format!("SELECT {COLUMNS} FROM users ORDER BY id"))?;
    let rows = q.query_map([], user)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Replaces a password hash; `one_time` marks it as one the person must change.
pub fn set_password(t: &Transaction, id: i64, hash: &str, one_time: bool) -> Result<()> {
    t.execute(
        "UPDATE users SET password = ?1, must_change = ?2 WHERE id = ?3",
        params![hash, one_time, id],
    )?;
    // Sessions opened with the old password end.
    t.execute("DELETE FROM sessions WHERE user_id = ?1", params![id])?;
    Ok(())
}

pub fn set_disabled(t: &Transaction, id: i64, disabled: bool) -> Result<()> {
    t.execute(
        "UPDATE users SET disabled = ?1 WHERE id = ?2",
        params![disabled, id],
    )?;
    if disabled {
        t.execute("DELETE FROM sessions WHERE user_id = ?1", params![id])?;
    }
    Ok(())
}

/// The chat user for an API key name (created on first feedback).
pub fn chat_user(t: &Transaction, key: &str) -> Result<i64> {
    let name = if key.is_empty() {
        "chat".to_string()
    } else {
        format!("chat@{key}")
    };
    if let Some((u, _)) = by_name(t, &name)? {
        return Ok(u.id);
    }
    Ok(add(t, &name, Role::Chat, "!")?.id)
}

/// Opens a session: `token_hash` identifies it, `csrf` must come with every change it makes.
pub fn open_session(
    t: &Transaction,
    user: i64,
    token_hash: &str,
    csrf: &str,
    ttl: i64,
) -> Result<()> {
    let now = now();
    t.execute("DELETE FROM sessions WHERE expires < ?1", params![now])?;
    t.execute(
        "INSERT INTO sessions (token_hash, user_id, csrf, created, expires) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token_hash, user, csrf, now, now + ttl],
    )?;
    Ok(())
}

/// The person and CSRF token of a live session.
pub fn session(c: &Connection, token_hash: &str) -> Result<Option<(User, String)>> {
    Ok(c.query_row(
        "SELECT u.id, u.name, u.role, u.disabled, u.must_change, s.csrf
         FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = ?1 AND s.expires >= ?2 AND u.disabled = 0",
        params![token_hash, now()],
        |r| Ok((user(r)?, r.get(5)?)),
    )
    .optional()?)
}

pub fn close_session(t: &Transaction, token_hash: &str) -> Result<()> {
    t.execute(
        "DELETE FROM sessions WHERE token_hash = ?1",
        params![token_hash],
    )?;
    Ok(())
}
