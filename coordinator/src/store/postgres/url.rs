//! The PostgreSQL database URL (`postgres://USER[:PASSWORD]@HOST:PORT/DB`, options such as
//! `?host=/run/postgresql` allowed), parsed once, and printed without its password: its
//! `Display` and `Debug` rebuild `postgres://USER@HOST:PORT/DB` from the parsed parts.
//! Not here: connecting (the store).

use std::fmt;

use tokio_postgres::config::Host;

use crate::store::StoreError;

#[derive(Clone)]
pub struct DatabaseUrl {
    config: tokio_postgres::Config,
}

impl DatabaseUrl {
    /// Parses `text`, which must be a `postgres://` or `postgresql://` URL naming a database.
    /// The error never repeats the text (it may hold a password).
    pub fn parse(text: &str) -> Result<DatabaseUrl, StoreError> {
        let text = text.trim();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(StoreError::BadUrl(
                "the database URL must start with postgres:// (postgres://USER@HOST:PORT/DB)"
                    .into(),
            ));
        }
        let config: tokio_postgres::Config = text.parse().map_err(|e| {
            StoreError::BadUrl(format!(
                "the database URL is not a valid PostgreSQL URL ({e})"
            ))
        })?;
        if config.get_dbname().is_none_or(str::is_empty) {
            return Err(StoreError::BadUrl(
                "the database URL names no database (postgres://USER@HOST:PORT/DB)".into(),
            ));
        }
        if config.get_user().is_none_or(str::is_empty) {
            return Err(StoreError::BadUrl(
                "the database URL names no user (postgres://USER@HOST:PORT/DB)".into(),
            ));
        }
        if config.get_hosts().is_empty() {
            return Err(StoreError::BadUrl(
                "the database URL names no host (postgres://USER@HOST:PORT/DB)".into(),
            ));
        }
        Ok(DatabaseUrl { config })
    }

    pub(super) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self.config.get_user().unwrap_or("");
        let ports = self.config.get_ports();
        write!(f, "postgres://{user}@")?;
        for (n, host) in self.config.get_hosts().iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            match host {
                Host::Tcp(name) => f.write_str(name)?,
                Host::Unix(path) => write!(f, "[{}]", path.display())?,
            }
            let port = ports.get(n).or(ports.first()).copied().unwrap_or(5432);
            write!(f, ":{port}")?;
        }
        write!(f, "/{}", self.config.get_dbname().unwrap_or(""))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

impl PartialEq for DatabaseUrl {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
            && self.config.get_password() == other.config.get_password()
    }
}

impl Eq for DatabaseUrl {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_printed() {
        let u = DatabaseUrl::parse("postgres://hoist:s3cret-pw@127.0.0.1:6543/fleet").unwrap();
        assert_eq!(u.to_string(), "postgres://hoist@127.0.0.1:6543/fleet");
        assert!(!format!("{u:?}").contains("s3cret-pw"));
        let u = DatabaseUrl::parse("postgres://hoist@/fleet?host=/run/postgresql").unwrap();
        assert_eq!(
            u.to_string(),
            "postgres://hoist@[/run/postgresql]:5432/fleet"
        );
    }

    #[test]
    fn bad_urls_are_refused_naming_the_problem_without_the_text() {
        for (text, problem) in [
            ("mysql://u:pw1@h/db", "must start with postgres://"),
            (
                "postgres://u:pw1@h:notaport/db",
                "not a valid PostgreSQL URL",
            ),
            ("postgres://u:pw1@h:5432", "names no database"),
            ("postgres://h:5432/db", "names no user"),
        ] {
            let err = DatabaseUrl::parse(text).unwrap_err().to_string();
            assert!(err.contains(problem), "{text}: {err}");
            assert!(!err.contains("pw1"), "{text}: {err}");
        }
    }
}
