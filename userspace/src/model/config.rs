//! The static YAML source: `--config FILE`, reloaded when it changes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::Model;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid configuration")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub struct ConfigFile {
    path: PathBuf,
    seen: Option<(SystemTime, u64, String)>,
}

impl ConfigFile {
    pub fn new(path: &Path) -> Self {
        ConfigFile {
            path: path.to_path_buf(),
            seen: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn parse(text: &str, path: &Path) -> Result<Model, ConfigError> {
        let model: Model = serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        model.validate()?;
        Ok(model)
    }

    /// The model if the file changed since the last call (the first call
    /// always reads it).
    pub fn poll(&mut self) -> Result<Option<Model>, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: self.path.clone(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(read_err)?;
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if let Some((t, len, _)) = &self.seen {
            if (*t, *len) == stamp {
                return Ok(None);
            }
        }
        let text = std::fs::read_to_string(&self.path).map_err(|source| ConfigError::Read {
            path: self.path.clone(),
            source,
        })?;
        if self.seen.as_ref().is_some_and(|(_, _, old)| *old == text) {
            self.seen = Some((stamp.0, stamp.1, text));
            return Ok(None);
        }
        let model = Self::parse(&text, &self.path)?;
        self.seen = Some((stamp.0, stamp.1, text));
        Ok(Some(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_form() {
        let m = ConfigFile::parse(
            "services:\n  - name: echo\n    vip: 10.96.0.10:8080\n    policy: round-robin\n    endpoints: [10.1.0.2:8080, 10.1.0.3:8080]\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(m.services[0].endpoints.len(), 2);
        assert_eq!(m.services[0].vip.port(), 8080);
    }

    #[test]
    fn ipv6_services_are_quoted_bracketed_addresses() {
        // Quoted: an unquoted `[…]` is a YAML sequence.
        let m = ConfigFile::parse(
            "services:\n  - name: echo6\n    vip: \"[fd00:96::10]:8080\"\n    endpoints: [\"[fd00:1:1::2]:8080\", \"10.1.0.2:8080\"]\n",
            Path::new("x"),
        )
        .unwrap();
        assert!(m.services[0].vip.is_ipv6());
        assert!(m.services[0].endpoints[0].is_ipv6());
        assert!(m.services[0].endpoints[1].is_ipv4());
    }

    /// The error and its sources, as `anyhow` prints them.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut cur = e.source();
        while let Some(s) = cur {
            out += &format!(": {s}");
            cur = s.source();
        }
        out
    }

    #[test]
    fn errors_name_the_problem() {
        let e = ConfigFile::parse(
            "services:\n  - name: a\n    vip: nonsense\n    endpoints: []\n",
            Path::new("f.yaml"),
        )
        .map(|_| ())
        .map_err(|e| chain(&e))
        .unwrap_err();
        assert!(e.contains("f.yaml"), "{e}");
        let e = ConfigFile::parse("services:\n  - {name: a, vip: 1.1.1.1:1, endpoints: []}\n  - {name: a, vip: 1.1.1.2:1, endpoints: []}\n", Path::new("f"))
            .map(|_| ())
            .map_err(|e| chain(&e))
            .unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = ConfigFile::parse(
            "services:\n  - {name: a, vip: 1.1.1.1:1, policy: random, endpoints: []}\n",
            Path::new("f"),
        )
        .map(|_| ())
        .map_err(|e| chain(&e))
        .unwrap_err();
        assert!(e.contains("random"), "{e}");
    }
}
