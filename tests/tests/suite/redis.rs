//! The history cache in Redis: the API cases that read history with the Redis cache on (on the
//! embedded store, on PostgreSQL and on DynamoDB), each checking that the cache is Redis; keys
//! under the configured prefix; and what happens when Redis stops or hangs.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lighttech_tests::{TestApp, redis_env, redis_url, sqlite_fixture};
use serde_json::json;

lighttech_tests::api_suite!(sqlite_fixture, env = redis_env(), cache = "redis");

/// The same cases with the Redis cache in front of PostgreSQL.
mod postgres {
    use lighttech_tests::{postgres_fixture, redis_env};
    lighttech_tests::api_suite!(postgres_fixture, env = redis_env(), cache = "redis");
}

/// The same cases with the Redis cache in front of DynamoDB (moto).
mod dynamodb {
    use lighttech_tests::{dynamo_fixture, redis_env};
    lighttech_tests::api_suite!(dynamo_fixture, env = redis_env(), cache = "redis");
}

async fn history(t: &TestApp, token: &str) -> lighttech_tests::Resp {
    t.get("/api/balance/v1/operations/", Some(token)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_stored_in_redis_under_the_configured_prefix() {
    let env = redis_env();
    let prefix = env[1].1.clone();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let t = TestApp::with_env(sqlite_fixture().await, &pairs).await;
    assert_eq!(t.app.cache.kind(), "redis");
    let alice = t.user("alice").await;
    t.deposit(&alice, "3").await;
    let miss = history(&t, &alice.access).await;
    assert_eq!(miss.header("x-cache").as_deref(), Some("miss"));

    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, miss.body, "Redis holds exactly the page served");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 300, "{ttl}");
    // A second "container" with its own process memory shares the Redis entries.
    let t2 = TestApp::from_app(
        lighttech::App::new(
            t.app.config.clone(),
            t.app.store.clone(),
            lighttech::config::SecretKey::new(t.secret.clone().into_bytes()).unwrap(),
        ),
        t.secret.clone(),
    );
    let hit = history(&t2, &alice.access).await;
    assert_eq!(hit.header("x-cache").as_deref(), Some("hit"));
    assert_eq!(hit.body, miss.body);
}

/// A private redis-server on a free loopback port, stopped on drop.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server (Debian package redis-server): {e}")
            });
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis {
            port,
            child: Some(child),
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_redis_stopping_and_use_it_again_when_it_returns() {
    let port = lighttech_tests::wire::free_port();
    let mut redis = PrivateRedis::start(port);
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let t = TestApp::with_env(
        sqlite_fixture().await,
        &[("REDIS_URL", url.as_str()), ("REDIS_TIMEOUT_MS", "200")],
    )
    .await;
    let alice = t.user("alice").await;
    t.deposit(&alice, "5").await;
    assert_eq!(
        history(&t, &alice.access)
            .await
            .header("x-cache")
            .as_deref(),
        Some("miss")
    );
    assert_eq!(
        history(&t, &alice.access)
            .await
            .header("x-cache")
            .as_deref(),
        Some("hit")
    );

    redis.stop();
    let before = t.app.cache_stats.errors.load(Ordering::Relaxed);
    for amount in ["1", "2"] {
        t.post(
            "/api/balance/v1/deposit/",
            Some(&alice.access),
            &json!({ "amount": amount }),
            &[],
        )
        .await
        .expect(201, "");
        let r = history(&t, &alice.access).await;
        r.expect(200, "");
        assert_eq!(r.header("x-cache").as_deref(), Some("miss"));
        assert_eq!(
            r.json()["results"][0]["amount"],
            format!("{amount}.00"),
            "fresh from the store while Redis is down"
        );
    }
    assert!(t.app.cache_stats.errors.load(Ordering::Relaxed) > before);

    // Redis comes back on the same port; after the short skip the cache is used again.
    let _redis = PrivateRedis::start(port);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = history(&t, &alice.access).await;
        r.expect(200, "");
        if r.header("x-cache").as_deref() == Some("hit") {
            break;
        }
        assert!(Instant::now() < deadline, "the cache never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_never_answers_costs_at_most_its_timeout() {
    // Accepts connections and never says a word; counts them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let url = format!("redis://127.0.0.1:{port}/0");
    let t = TestApp::with_env(
        sqlite_fixture().await,
        &[("REDIS_URL", url.as_str()), ("REDIS_TIMEOUT_MS", "100")],
    )
    .await;
    let alice = t.user("alice").await;
    t.deposit(&alice, "5").await;
    // Without the timeout this request would hang for good; with it, it answers from the store.
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), history(&t, &alice.access))
        .await
        .expect("a hung Redis must not hang the read");
    r.expect(200, "");
    assert_eq!(r.json()["results"][0]["amount"], "5.00");
    assert_eq!(r.header("x-cache").as_deref(), Some("miss"));
    eprintln!("history read with a silent Redis: {:?}", started.elapsed());
    let tried = accepted.load(Ordering::SeqCst);
    assert!(tried >= 1, "Redis was tried");
    // Right after a failure Redis is skipped: no new connection attempts for a while.
    for _ in 0..5 {
        history(&t, &alice.access).await.expect(200, "");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        tried,
        "Redis is skipped after a failure"
    );
    assert!(t.app.cache_stats.errors.load(Ordering::Relaxed) >= 1);
}
