//! The devices-API client of each server profile: built from the profile's configuration
//! (TLS, pins, the credential and where its secret lives), kept per profile for a process's
//! lifetime ([`Clients`]), and the machine-token rotation policy.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keytally_protocol::auth::{Authenticator, ClientAuth, ClientCredentials, Credential, MachineToken, StaticSource, StaticToken};
use keytally_protocol::http::{build_client, parse_secure_url, HttpConfig};
use keytally_protocol::secret::{Secret, SecretReader, SecretSource};
use keytally_protocol::DevicesClient;

use crate::config::{AuthConfig, Config, Profile, Rotation};

/// The client (and its credential) for one profile. Errors name the profile.
pub fn client_for(cfg: &Config, p: &Profile) -> anyhow::Result<DevicesClient> {
    let transport = HttpConfig {
        timeout: cfg.timeout,
        extra_ca_file: p.ca_file.clone(),
        pinned_spki: p.pins.clone(),
        ..HttpConfig::default()
    };
    let http = build_client(&transport).with_context(|| format!("profile {}", p.name))?;
    let base = parse_secure_url("server URL", &p.server)?;
    let env_secret = |var: &str| -> anyhow::Result<Secret> {
        Secret::from_env(var)?.with_context(|| format!("profile {}: environment variable {var} is not set", p.name))
    };
    // A keyring entry is read again when its secret is refused (the keyring's errors name
    // the entry; callers add the profile).
    let keyring_source = |e: &crate::keyring::KeyringEntry| {
        let entry = e.clone();
        SecretSource::Reader(SecretReader::new(format!("keyring {e}"), move || {
            crate::keyring::get(&entry, crate::keyring::READ_TIMEOUT).map_err(|e| e.to_string())
        }))
    };
    let credential = match &p.auth {
        AuthConfig::TokenEnv(var) => Credential::Static(StaticToken::new(StaticSource::Value(env_secret(var)?))?),
        AuthConfig::TokenFile(f) => Credential::Static(StaticToken::new(StaticSource::File(f.clone()))?),
        AuthConfig::TokenKeyring(e) => Credential::Static(StaticToken::new(keyring_source(e))?),
        AuthConfig::OAuth { client_id, secret_env, secret_file, secret_keyring, token_url, basic, scope } => {
            let (secret, source) = match (secret_env, secret_file, secret_keyring) {
                (Some(v), _, _) => (env_secret(v)?, None),
                (None, Some(f), _) => (Secret::from_file(f)?, Some(SecretSource::File(f.clone()))),
                (None, None, Some(e)) => {
                    let source = keyring_source(e);
                    (source.read().map_err(anyhow::Error::msg)?, Some(source))
                }
                (None, None, None) => anyhow::bail!("profile {}: no client secret", p.name),
            };
            let cc = ClientCredentials::new(
                http.clone(),
                parse_secure_url("token URL", token_url)?,
                client_id.clone(),
                secret,
                scope.clone(),
                if *basic { ClientAuth::Basic } else { ClientAuth::Body },
            );
            Credential::OAuth(match source {
                Some(s) => cc.with_secret_source(s),
                None => cc,
            })
        }
        AuthConfig::Machine { file, initial_env, .. } => {
            let initial = match initial_env {
                Some(v) => Secret::from_env(v)?,
                None => None,
            };
            let mut server = base.clone();
            server.set_path("");
            Credential::Machine(MachineToken::open(http.clone(), file.clone(), &server, initial)?)
        }
    };
    Ok(DevicesClient::new(http, base, Arc::new(Authenticator::new(credential)))?)
}

/// One client per profile, kept across pushes by the long-running modes: connections stay
/// alive and an OAuth2 token is fetched once and refreshed, not fetched for every push.
#[derive(Default)]
pub struct Clients(std::collections::HashMap<String, DevicesClient>);

impl Clients {
    pub fn get(&mut self, cfg: &Config, p: &Profile) -> anyhow::Result<&DevicesClient> {
        if !self.0.contains_key(&p.name) {
            let client = client_for(cfg, p)?;
            self.0.insert(p.name.clone(), client);
        }
        self.0.get(&p.name).ok_or_else(|| anyhow::anyhow!("profile {}: no client", p.name))
    }
}

/// Rotates a machine token when it is due: its `exp` is within `rotation.within`, or the
/// token file is older than `rotation.every`. Returns whether it rotated. The rotation is
/// sent at most once per run and never retried here: a failure leaves the old token (and,
/// when the answer was lost, the intent marker that blocks further rotations until a
/// request with the old token succeeds; see `keytally_protocol::auth::rotation`).
pub async fn rotate_if_due(client: &DevicesClient, rotation: Rotation, now: u64) -> Result<bool, keytally_protocol::auth::AuthError> {
    let Credential::Machine(mt) = client.auth().credential() else { return Ok(false) };
    if mt.rotation_interrupted() {
        return Ok(false);
    }
    let now_t = std::time::UNIX_EPOCH + Duration::from_secs(now);
    let by_expiry = keytally_protocol::auth::jwt::expiry(mt.token().expose())
        .is_some_and(|exp| exp <= now_t + rotation.within);
    let by_age = rotation.every.is_some_and(|every| {
        std::fs::metadata(mt.path())
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified + every <= now_t)
    });
    if !(by_expiry || by_age) {
        return Ok(false);
    }
    tracing::info!(by_expiry, by_age, "rotating the machine token");
    mt.rotate().await?;
    Ok(true)
}

