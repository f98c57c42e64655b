//! Credentials and their secrets: named, never written in the file, read from the environment
//! or from files that only their owner may read.

use std::path::Path;

use secrecy::SecretString;

use super::raw::RawCredential;
use super::{ConfigError, validate_endpoint};
use crate::ddm::auth::{AccessKey, DEFAULT_IAM_ENDPOINT, IamPassword};
use crate::ddm::{Credential, CredentialKind};

pub(super) fn credential(
    name: &str,
    c: &RawCredential,
    files: &mut SecretFiles<'_>,
) -> Result<Credential, ConfigError> {
    let key = format!("credentials.{name}");
    only_fields_of_its_kind(&key, c)?;
    let iam_endpoint = match &c.iam_endpoint {
        Some(e) => validate_endpoint(&format!("{key}.iam_endpoint"), e)?,
        None => DEFAULT_IAM_ENDPOINT.to_owned(),
    };
    let required = |field: &str, value: &Option<String>| {
        value
            .clone()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| ConfigError::new(format!("{key}.{field}"), "is required"))
    };
    let kind = match c.kind.as_str() {
        "token" => CredentialKind::Token(secret(
            &key,
            "token",
            c.token_env.as_deref(),
            c.token_file.as_deref(),
            files,
        )?),
        "iam_password" => CredentialKind::IamPassword(IamPassword::new(
            iam_endpoint,
            required("domain", &c.domain)?,
            required("user", &c.user)?,
            secret(
                &key,
                "password",
                c.password_env.as_deref(),
                c.password_file.as_deref(),
                files,
            )?,
        )),
        _ => CredentialKind::AccessKey(AccessKey {
            iam_endpoint,
            access_key: required("access_key", &c.access_key)?,
            secret_key: secret(
                &key,
                "secret_key",
                c.secret_key_env.as_deref(),
                c.secret_key_file.as_deref(),
                files,
            )?,
        }),
    };
    Ok(Credential::new(name, kind))
}

/// A known `kind`, and no field that this kind does not use.
fn only_fields_of_its_kind(key: &str, c: &RawCredential) -> Result<(), ConfigError> {
    let set = [
        ("token_env", c.token_env.is_some()),
        ("token_file", c.token_file.is_some()),
        ("domain", c.domain.is_some()),
        ("user", c.user.is_some()),
        ("password_env", c.password_env.is_some()),
        ("password_file", c.password_file.is_some()),
        ("access_key", c.access_key.is_some()),
        ("secret_key_env", c.secret_key_env.is_some()),
        ("secret_key_file", c.secret_key_file.is_some()),
        ("iam_endpoint", c.iam_endpoint.is_some()),
    ];
    let allowed: &[&str] = match c.kind.as_str() {
        "token" => &["token_env", "token_file"],
        "iam_password" => &[
            "domain",
            "user",
            "password_env",
            "password_file",
            "iam_endpoint",
        ],
        "aksk" => &[
            "access_key",
            "secret_key_env",
            "secret_key_file",
            "iam_endpoint",
        ],
        other => {
            return Err(ConfigError::new(
                format!("{key}.kind"),
                format!(
                    "{other:?} is not a credential kind; use \"token\", \"iam_password\" or \"aksk\""
                ),
            ));
        }
    };
    match set
        .iter()
        .find(|(f, present)| *present && !allowed.contains(f))
    {
        Some((field, _)) => Err(ConfigError::new(
            format!("{key}.{field}"),
            format!("not used by a credential of kind {:?}", c.kind),
        )),
        None => Ok(()),
    }
}

/// How secrets are read: from the environment or from files relative to the configuration.
pub(super) struct SecretFiles<'a> {
    pub base: &'a Path,
    /// `false` for `check-config --no-secrets`: the references are checked, not read.
    pub read: bool,
    /// Refuse files that others than their owner may read (else: warn).
    pub must_be_private: bool,
    pub warnings: &'a mut Vec<String>,
}

/// A secret from `{field}_env` (an environment variable) or `{field}_file`, exactly one.
pub(super) fn secret(
    key: &str,
    field: &str,
    env: Option<&str>,
    file: Option<&Path>,
    files: &mut SecretFiles<'_>,
) -> Result<SecretString, ConfigError> {
    let value = match (env, file) {
        (Some(_), None) | (None, Some(_)) if !files.read => {
            return Ok(SecretString::from("unread"));
        }
        (Some(var), None) => std::env::var(var).map_err(|_| {
            ConfigError::new(
                format!("{key}.{field}_env"),
                format!("the environment variable {var} is not set"),
            )
        })?,
        (None, Some(path)) => {
            let path = files.base.join(path);
            let file_key = format!("{key}.{field}_file");
            check_private(&file_key, &path, files)?;
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(&file_key, format!("cannot read {}: {e}", path.display()))
            })?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        _ => {
            return Err(ConfigError::new(
                key,
                format!(
                    "give exactly one of {field}_env or {field}_file (secrets are never written in the file)"
                ),
            ));
        }
    };
    if value.is_empty() {
        return Err(ConfigError::new(key, format!("the {field} is empty")));
    }
    if value.len() > 64 * 1024 || reqwest::header::HeaderValue::from_str(&value).is_err() {
        return Err(ConfigError::new(
            key,
            format!("the {field} is longer than 64 KiB or not valid in an HTTP header"),
        ));
    }
    Ok(SecretString::from(value))
}

/// A secret file that others may read is a leak waiting to happen; so is one that a group may
/// read, unless it is our own group (Kubernetes projects Secrets to a non-root pod with the
/// pod's fsGroup as their group, mode 0440).
pub(super) fn check_private(
    key: &str,
    path: &Path,
    files: &mut SecretFiles<'_>,
) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        // Kubernetes mounts Secrets through symlinks: the mode that counts is the target's.
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(()); // reading it will say what is wrong
        };
        let mode = meta.permissions().mode() & 0o777;
        let group_ok = mode & 0o070 == 0 || (mode & 0o030 == 0 && is_own_group(meta.gid()));
        if mode & 0o007 != 0 || !group_ok {
            let problem = format!(
                "{} may be read by others than its owner (mode {mode:o}); chmod 600 it",
                path.display()
            );
            if files.must_be_private {
                return Err(ConfigError::new(key, problem));
            }
            files.warnings.push(format!("{key}: {problem}"));
        }
    }
    Ok(())
}

/// Whether `gid` is this process's group or one of its supplementary groups.
#[cfg(unix)]
fn is_own_group(gid: u32) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: getegid and getgroups only read the process's credentials into our buffer.
        unsafe {
            if libc::getegid() == gid {
                return true;
            }
            let mut groups = [0 as libc::gid_t; 256];
            let n = libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr());
            n > 0 && groups[..n as usize].contains(&gid)
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = gid;
        false
    }
}
