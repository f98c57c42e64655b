//! Credentials for the upstream: how one request gets authorised.
//!
//! Secrets live in `SecretString`: their `Debug` is redacted and nothing here formats them.

use reqwest::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use super::error::DdmError;

/// A named credential from the configuration.
pub struct Credential {
    name: String,
    kind: CredentialKind,
}

pub enum CredentialKind {
    /// A static token sent as `X-Auth-Token`.
    Token(SecretString),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            CredentialKind::Token(_) => "token",
        };
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");

impl Credential {
    pub fn new(name: impl Into<String>, kind: CredentialKind) -> Self {
        Credential {
            name: name.into(),
            kind,
        }
    }

    pub fn token(name: impl Into<String>, token: SecretString) -> Self {
        Self::new(name, CredentialKind::Token(token))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds what proves who we are to a request for `project_id`.
    pub async fn authorize(
        &self,
        request: &mut reqwest::Request,
        _project_id: &str,
    ) -> Result<(), DdmError> {
        match &self.kind {
            CredentialKind::Token(token) => {
                let value =
                    sensitive_header(token.expose_secret()).map_err(|message| DdmError::Auth {
                        credential: self.name.clone(),
                        message,
                        upstream: None,
                    })?;
                request.headers_mut().insert(X_AUTH_TOKEN, value);
                Ok(())
            }
        }
    }

    /// The upstream rejected our token: whether a second try with fresh credentials makes sense.
    pub fn refresh_after_rejection(&self, _project_id: &str) -> bool {
        match self.kind {
            // A static token cannot be renewed by us.
            CredentialKind::Token(_) => false,
        }
    }
}

/// A header value marked sensitive (so hyper and reqwest never print it).
pub fn sensitive_header(secret: &str) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(secret)
        .map_err(|_| "the secret contains characters not allowed in an HTTP header".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}
