//! Secrets — the API key, `HF_TOKEN`, `GITHUB_TOKEN` and every credential
//! added later — held in one type whose `Debug` and `Display` print `***`,
//! so no log line, error message or `{:?}` dump can show one. The value is
//! read only where it is sent, through [`Secret::expose`].

use std::fmt;

/// A credential; prints as `***`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `None` for an empty value: an empty variable means "unset".
    pub fn non_empty(self) -> Option<Self> {
        (!self.0.is_empty()).then_some(self)
    }

    /// Compares in constant time, so timing does not reveal the secret.
    pub fn matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(given).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::download::Downloader;
    use crate::sources::github::GitHub;
    use crate::sources::huggingface::HfHub;

    const VALUES: [&str; 3] = ["api-key-0451", "hf_token_0451", "ghp_token_0451"];

    #[test]
    fn config_and_clients_print_no_secret() {
        let args = crate::ConfigArgs {
            api_key: Some(Secret::new(VALUES[0])),
            hf_token: Some(Secret::new(VALUES[1])),
            github_token: Some(Secret::new(VALUES[2])),
            ..Default::default()
        };
        let config = args.clone().resolve().unwrap();
        let downloader = Downloader::new(config.download, &config.data_dir, Default::default());
        let hub = HfHub::new(
            &config.hf_endpoint,
            config.hf_token.clone(),
            downloader.clone(),
        );
        let github = GitHub::new(
            &config.github_api_url,
            &config.github_server_url,
            config.github_token.clone(),
            downloader,
        );
        let dumps = [
            format!("{args:?}"),
            format!("{config:?}"),
            format!("{config:#?}"),
            format!("{hub:?}"),
            format!("{github:?}"),
            format!("{}", config.api_key.as_ref().unwrap()),
        ];
        for dump in dumps {
            for value in VALUES {
                assert!(!dump.contains(value), "{dump}");
            }
            assert!(dump.contains("***"), "{dump}");
        }
    }

    #[test]
    fn matching_is_exact() {
        let key = Secret::new("s3cret");
        assert!(key.matches(b"s3cret"));
        for wrong in [&b"s3cre"[..], b"s3cret!", b"S3cret", b""] {
            assert!(!key.matches(wrong));
        }
    }
}
