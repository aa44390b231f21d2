//! The devices API client and the three credential styles over real HTTP on loopback,
//! against the sandbox server started in-process.

use std::sync::Arc;
use std::time::Duration;

use keytally_protocol::http::{build_client, parse_secure_url, Failure, HttpConfig};
use keytally_protocol::DevicesClient;
use keytally_protocol::auth::{Authenticator, ClientAuth, ClientCredentials, Credential, MachineToken, StaticSource, StaticToken};
use keytally_protocol::secret::Secret;
use keytally_sandbox::{Config, Faults, Hostile, Sandbox};
use serde_json::json;
use uuid::Uuid;

fn record(id: &str, n: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({"yubikey": {"uniqueId": id, "serialNumber": id, "firmwareVersion": "5.7.2"}, "observation": {"seq": n}})).unwrap()
}

fn http(timeout: Duration) -> reqwest::Client {
    build_client(&HttpConfig { connect_timeout: Duration::from_secs(2), timeout, ..HttpConfig::default() }).unwrap()
}

fn static_client(sb: &Sandbox, token: &str) -> DevicesClient {
    let auth = Authenticator::new(Credential::Static(StaticToken::new(StaticSource::Value(Secret::new(token))).unwrap()));
    DevicesClient::new(http(Duration::from_secs(5)), parse_secure_url("server", &sb.devices_base()).unwrap(), Arc::new(auth)).unwrap()
}

fn oauth_client(sb: &Sandbox, secret: &str, timeout: Duration) -> DevicesClient {
    let cc = ClientCredentials::new(
        http(timeout),
        parse_secure_url("token URL", &sb.token_url()).unwrap(),
        "keytally".into(),
        Secret::new(secret),
        None,
        ClientAuth::Basic,
    );
    let auth = Authenticator::new(Credential::OAuth(cc));
    DevicesClient::new(http(timeout), parse_secure_url("server", &sb.devices_base()).unwrap(), Arc::new(auth)).unwrap()
}

async fn sandbox() -> Sandbox {
    keytally_sandbox::spawn(Config::default()).await.unwrap()
}

#[tokio::test]
async fn api_key_upsert_is_idempotent_and_listed() {
    let sb = sandbox().await;
    let (_id, key) = sb.create_api_key("ci");
    let c = static_client(&sb, &key);
    let k = Uuid::new_v4();
    let p = c.put_device("1001", &record("1001", 1), k).await.unwrap();
    assert_eq!(p.status, 201);
    // Same version again (a retry after a lost answer): accepted, not applied twice.
    assert_eq!(c.put_device("1001", &record("1001", 1), k).await.unwrap().status, 200);
    assert_eq!(sb.store().puts_applied(), 1);
    c.put_device("1002", &record("1002", 1), Uuid::new_v4()).await.unwrap();
    let all = c.list_all(1, 100).await.unwrap();
    assert_eq!(all.len(), 2, "paginated one at a time");
    assert_eq!(all[0]["yubikey"]["uniqueId"], "1001");
}

#[tokio::test]
async fn bare_array_list_is_accepted() {
    let sb = keytally_sandbox::spawn(Config { bare_list: true, ..Config::default() }).await.unwrap();
    let (_, key) = sb.create_api_key("ci");
    let c = static_client(&sb, &key);
    c.put_device("7", &record("7", 1), Uuid::new_v4()).await.unwrap();
    let page = c.list_devices(10, 0).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.total_count, None);
}

#[tokio::test]
async fn revoked_api_key_is_credential_rejected_after_one_request() {
    let sb = sandbox().await;
    let (id, key) = sb.create_api_key("ci");
    let c = static_client(&sb, &key);
    c.put_device("1", &record("1", 1), Uuid::new_v4()).await.unwrap();
    assert!(sb.revoke_api_key(&id));
    let before = sb.device_request_count();
    let err = c.put_device("1", &record("1", 2), Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(err, Failure::CredentialRejected { status: Some(403), .. }), "{err:?}");
    assert!(err.to_string().starts_with("credential rejected"), "{err}");
    assert_eq!(sb.device_request_count() - before, 1, "a 403 is not retried");
    // An unknown key: 401, the static value cannot be refreshed, so exactly one request.
    let c = static_client(&sb, "ktsk_unknown");
    let before = sb.device_request_count();
    let err = c.put_device("1", &record("1", 2), Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(err, Failure::CredentialRejected { status: None, .. }), "{err:?}");
    assert_eq!(sb.device_request_count() - before, 1);
}

#[cfg(unix)]
#[tokio::test]
async fn token_file_is_reread_once_after_401() {
    use std::os::unix::fs::PermissionsExt;
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "ktsk_stale_unknown\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let auth = Authenticator::new(Credential::Static(StaticToken::new(StaticSource::File(path.clone())).unwrap()));
    let c = DevicesClient::new(http(Duration::from_secs(5)), parse_secure_url("s", &sb.devices_base()).unwrap(), Arc::new(auth)).unwrap();
    // The operator puts a new key in the file while keytally runs with the old one.
    let (_, new) = sb.create_api_key("new");
    std::fs::write(&path, &new).unwrap();
    let before = sb.device_request_count();
    c.put_device("1", &record("1", 1), Uuid::new_v4()).await.unwrap();
    assert_eq!(sb.device_request_count() - before, 2, "one 401, one re-read, one success");
    // Now the file holds a key the server does not know: 401, re-read gives the same, rejected.
    std::fs::write(&path, "ktsk_other_unknown").unwrap();
    let c2 = DevicesClient::new(
        http(Duration::from_secs(5)),
        parse_secure_url("s", &sb.devices_base()).unwrap(),
        Arc::new(Authenticator::new(Credential::Static(StaticToken::new(StaticSource::File(path.clone())).unwrap()))),
    )
    .unwrap();
    let before = sb.device_request_count();
    let r = c2.put_device("1", &record("1", 2), Uuid::new_v4()).await;
    assert!(matches!(r, Err(Failure::CredentialRejected { .. })), "{r:?}");
    assert_eq!(sb.device_request_count() - before, 1);
}

#[tokio::test]
async fn oauth_token_is_cached_and_refreshed_once_on_401() {
    let sb = sandbox().await;
    let c = oauth_client(&sb, "sandbox-client-secret", Duration::from_secs(5));
    let unused = c.auth().info(std::time::SystemTime::now()).await;
    assert_eq!((unused.expires_at, unused.expiry.as_str()), (None, "access tokens fetched when needed, none held by this process"));
    for i in 0..5 {
        c.put_device("1", &record("1", i), Uuid::new_v4()).await.unwrap();
    }
    assert_eq!(sb.token_request_count(), 1, "the token is cached");
    let info = c.auth().info(std::time::SystemTime::now()).await;
    assert_eq!(info.kind, "oauth2-client-credentials");
    let exp = info.expires_at.expect("the cached token's lifetime");
    assert_eq!(info.expiry, format!("expires {}", humantime::format_rfc3339_seconds(exp)));
    assert!(!format!("{info:?}").contains("sandbox-client-secret"));
    // The server forgets the token: 401 → one token request → success.
    sb.store().expire_access_tokens();
    let before = sb.device_request_count();
    c.put_device("1", &record("1", 9), Uuid::new_v4()).await.unwrap();
    assert_eq!(sb.token_request_count(), 2);
    assert_eq!(sb.device_request_count() - before, 2, "one 401, one success");
}

#[tokio::test]
async fn oauth_short_lifetime_refreshes_before_expiry() {
    let sb = keytally_sandbox::spawn(Config { token_lifetime: Duration::from_secs(2), ..Config::default() }).await.unwrap();
    let c = oauth_client(&sb, "sandbox-client-secret", Duration::from_secs(5));
    c.put_device("1", &record("1", 1), Uuid::new_v4()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1700)).await; // past 80 % of 2 s
    let before = sb.device_request_count();
    c.put_device("1", &record("1", 2), Uuid::new_v4()).await.unwrap();
    assert_eq!(sb.token_request_count(), 2, "refreshed ahead of expiry");
    assert_eq!(sb.device_request_count() - before, 1, "no 401 was needed");
}

#[tokio::test]
async fn oauth_wrong_secret_is_credential_rejected_and_secret_not_in_error() {
    let sb = sandbox().await;
    let c = oauth_client(&sb, "wrong-secret-value", Duration::from_secs(5));
    let err = c.put_device("1", &record("1", 1), Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(err, Failure::CredentialRejected { .. }), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("unknown client or wrong secret"), "{text}");
    assert!(!text.contains("wrong-secret-value"), "{text}");
    assert_eq!(sb.device_request_count(), 0);
}

#[tokio::test]
async fn token_url_redirect_is_refused() {
    let sb = sandbox().await;
    *sb.faults() = Faults { token_redirect: Some("https://evil.example/steal".into()), ..Faults::default() };
    let c = oauth_client(&sb, "sandbox-client-secret", Duration::from_secs(5));
    let err = c.put_device("1", &record("1", 1), Uuid::new_v4()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("redirect") && text.contains("evil.example"), "{text}");
    assert!(matches!(err, Failure::CredentialRejected { .. }));
}

#[tokio::test]
async fn retry_after_is_reported_and_permanent_rejections_carry_the_reason() {
    let sb = sandbox().await;
    let (_, key) = sb.create_api_key("ci");
    let c = static_client(&sb, &key);
    *sb.faults() = Faults { fail_next: 1, fail_status: Some(429), retry_after: Some(17), ..Faults::default() };
    let err = c.put_device("1", &record("1", 1), Uuid::new_v4()).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));
    // Body and URL disagree: 422, quarantine material, with the server's reason.
    let err = c.put_device("1", &record("2", 1), Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(&err, Failure::Rejected { status: 422, reason } if reason.contains("does not match")), "{err:?}");
}

#[tokio::test]
async fn hostile_answers_give_clear_errors() {
    let sb = sandbox().await;
    let (_, key) = sb.create_api_key("ci");
    let c = static_client(&sb, &key);
    sb.faults().hostile = Some(Hostile::NonJson);
    let e = c.list_devices(10, 0).await.unwrap_err();
    assert!(e.to_string().contains("not JSON"), "{e}");

    sb.faults().hostile = Some(Hostile::Huge(64 * 1024 * 1024));
    let t = std::time::Instant::now();
    let e = c.list_devices(10, 0).await.unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));

    sb.faults().hostile = Some(Hostile::SlowBody(200));
    let slow = DevicesClient::new(
        http(Duration::from_secs(1)),
        parse_secure_url("s", &sb.devices_base()).unwrap(),
        c.auth().clone(),
    )
    .unwrap();
    let t = std::time::Instant::now();
    let e = slow.list_devices(10, 0).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "bounded by the total timeout");
    assert!(e.to_string().contains("timed out") || e.to_string().contains("body"), "{e}");
}

#[tokio::test]
async fn connection_refused_and_dropped_are_retryable() {
    let sb = sandbox().await;
    let (_, key) = sb.create_api_key("ci");
    let c = static_client(&sb, &key);
    sb.faults().drop_next = 1;
    let e = c.put_device("1", &record("1", 1), Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(e, Failure::Retryable { status: None, .. }), "{e:?}");
    c.put_device("1", &record("1", 1), Uuid::new_v4()).await.unwrap();
    let url = sb.devices_base();
    drop(sb);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let dead = DevicesClient::new(http(Duration::from_secs(2)), parse_secure_url("s", &url).unwrap(), c.auth().clone()).unwrap();
    let e = dead.put_device("1", &record("1", 1), Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(e, Failure::Retryable { .. }), "{e:?}");
}

#[tokio::test]
async fn machine_token_rotates_and_is_stored_durably() {
    let sb = keytally_sandbox::spawn(Config { machine_token: Some("mt-initial".into()), ..Config::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("machine-token");
    let server = parse_secure_url("s", &sb.url()).unwrap();
    let mt = MachineToken::open(http(Duration::from_secs(5)), path.clone(), &server, Some(Secret::new("mt-initial"))).unwrap();
    let auth = Arc::new(Authenticator::new(Credential::Machine(mt)));
    let c = DevicesClient::new(http(Duration::from_secs(5)), parse_secure_url("s", &sb.devices_base()).unwrap(), auth.clone()).unwrap();
    c.put_device("1", &record("1", 1), Uuid::new_v4()).await.unwrap();
    let Credential::Machine(mt) = auth.credential() else { unreachable!() };
    mt.rotate().await.unwrap();
    let stored = std::fs::read_to_string(&path).unwrap();
    assert_eq!(Some(stored.clone()), sb.current_machine_token());
    assert_ne!(stored, "mt-initial");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(!mt.rotation_interrupted());
    c.put_device("1", &record("1", 2), Uuid::new_v4()).await.unwrap();
    let info = auth.info(std::time::SystemTime::now()).await;
    assert_eq!(info.kind, "machine-token");
    assert!(info.expires_at.is_some(), "the new token is a JWT with exp");
}

#[tokio::test]
async fn rotation_interrupted_before_store_is_reported_not_looped() {
    let sb = keytally_sandbox::spawn(Config { machine_token: Some("mt-initial".into()), ..Config::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("machine-token");
    let server = parse_secure_url("s", &sb.url()).unwrap();
    let mt = MachineToken::open(http(Duration::from_secs(5)), path.clone(), &server, Some(Secret::new("mt-initial"))).unwrap();
    // "Crash" between receiving the new token and storing it: the task dies in the hook.
    let crashed = tokio::spawn(async move {
        mt.rotate_with_hook(|| panic!("simulated crash before store")).await
    })
    .await;
    assert!(crashed.is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "mt-initial", "old token still on disk");
    // Restart: the marker says a rotation was interrupted.
    let mt = MachineToken::open(http(Duration::from_secs(5)), path.clone(), &server, None).unwrap();
    assert!(mt.rotation_interrupted());
    let auth = Arc::new(Authenticator::new(Credential::Machine(mt)));
    assert!(auth.info(std::time::SystemTime::now()).await.rotation_interrupted);
    let c = DevicesClient::new(http(Duration::from_secs(5)), parse_secure_url("s", &sb.devices_base()).unwrap(), auth.clone()).unwrap();
    let before = sb.request_count();
    let e = c.put_device("1", &record("1", 1), Uuid::new_v4()).await.unwrap_err();
    assert!(e.to_string().contains("interrupted"), "{e}");
    assert_eq!(sb.request_count() - before, 1, "no rotation retry, no loop");
    let Credential::Machine(mt) = auth.credential() else { unreachable!() };
    assert!(mt.rotate().await.is_err(), "never rotates again blindly");
    assert_eq!(sb.request_count() - before, 1);
}

#[tokio::test]
async fn rotation_interrupted_before_reaching_server_clears_on_success() {
    let sb = keytally_sandbox::spawn(Config { machine_token: Some("mt-initial".into()), ..Config::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("machine-token");
    let server = parse_secure_url("s", &sb.url()).unwrap();
    let mt = MachineToken::open(http(Duration::from_secs(5)), path.clone(), &server, Some(Secret::new("mt-initial"))).unwrap();
    std::fs::write(mt.marker_path(), "rotation in progress\n").unwrap(); // died right after step 1
    let auth = Arc::new(Authenticator::new(Credential::Machine(mt)));
    let c = DevicesClient::new(http(Duration::from_secs(5)), parse_secure_url("s", &sb.devices_base()).unwrap(), auth.clone()).unwrap();
    c.put_device("1", &record("1", 1), Uuid::new_v4()).await.unwrap();
    let Credential::Machine(mt) = auth.credential() else { unreachable!() };
    assert!(!mt.rotation_interrupted(), "a 2xx with the old token proves no rotation happened");
}

#[tokio::test]
async fn expiring_jwt_api_token_warns_in_info() {
    let sb = sandbox().await;
    let exp = std::time::SystemTime::now() + Duration::from_secs(3 * 86_400);
    let jwt = keytally_protocol::auth::jwt::unsigned_for_test(exp);
    let c = static_client(&sb, &jwt);
    let info = c.auth().info(std::time::SystemTime::now()).await;
    let w = info.expiry_warning.clone().expect("a warning 3 days before expiry");
    assert!(w.contains("within 7 days"), "{w}");
    assert!(info.expiry.starts_with("expires 20"), "{}", info.expiry);
    assert!(!format!("{info:?}").contains(&jwt));
    // An opaque key (Yipii's, the sandbox's) states no expiry.
    let (_, key) = sb.create_api_key("opaque");
    let info = static_client(&sb, &key).auth().info(std::time::SystemTime::now()).await;
    assert_eq!((info.expires_at, info.expiry.as_str()), (None, "no expiry stated in the token"));
}
