//! What is wrong with a configuration: each problem under the key it concerns, all of a file's
//! problems at once.

#[derive(Debug, Clone, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Every problem of a configuration file.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn first(&self) -> &ConfigError {
        &self.0[0]
    }

    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.key.as_str()).collect()
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            all => {
                write!(f, "{} problems:", all.len())?;
                for e in all {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// Problems found so far, and warnings (worth saying, not worth refusing the file).
#[derive(Default)]
pub(crate) struct Problems {
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<String>,
}

impl Problems {
    pub(crate) fn push(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.errors.push(ConfigError::new(key, problem));
    }

    pub(super) fn add(&mut self, e: ConfigError) {
        self.errors.push(e);
    }

    /// The value, or `None` with the problem recorded under `key`.
    pub(crate) fn take<T>(&mut self, r: Result<T, String>, key: impl Into<String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(problem) => {
                self.push(key, problem);
                None
            }
        }
    }

    pub(super) fn keep<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| self.add(e)).ok()
    }

    /// A count of things that must lie in `1..=most`.
    pub(super) fn count(&mut self, key: &str, value: u64, most: u64) {
        if let Some(problem) = out_of_count(value, most) {
            self.push(key, problem);
        }
    }
}

/// Why `value` is no count in `1..=most`, if it is not.
pub(super) fn out_of_count(value: u64, most: u64) -> Option<String> {
    match value {
        0 => Some("must be at least 1".into()),
        v if v > most => Some(format!("must be at most {most}")),
        _ => None,
    }
}
